"""The failure text pytest and `massive-checks check` print: a headline, then each check's table of
where, expected bound and observed value with its interval."""

from __future__ import annotations

from massive_checks.language.intervals import CONFIDENCE, CONTRADICTED, INCONCLUSIVE, Estimate
from massive_checks.output.records import CheckVerdict, Observation, Row, Verdict, format_value


def check_table(check: CheckVerdict, confidence: float = CONFIDENCE, only_failures: bool = False) -> list[str]:
    rows = [r for r in check.rows if not (only_failures and r.ok)]
    level = f"{confidence:.0%} simultaneous over {check.band} rows" if check.band else f"{confidence:.0%} interval"
    cells = [("", "where", "expected", f"observed [{level}]", "")] + [
        (r.verdict, r.key, r.expected, format_row(r, confidence), r.note) for r in rows
    ]
    widths = [max(len(str(row[i])) for row in cells) for i in range(5)]
    return ["  " + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]


def format_row(row: Row, confidence: float) -> str:
    """A row's value with the interval it was decided on (a band's share, where it has one)."""
    if row.interval is None or not isinstance(row.observed, Estimate):
        return format_value(row.observed, confidence)
    low, high = row.interval
    return f"{format_value(row.observed.value)} [{format_value(low)}, {format_value(high)}]"


HEADLINES = {
    "contradicted": "claim contradicted on {model} (an interval lies wholly outside its bound)",
    "inconclusive": "claim inconclusive on {model}: an interval straddles its bound, so this data cannot decide it",
    "holds": "claim holds on {model}",
}


def failure_text(observation: Observation, verdict: Verdict) -> str:
    outcome = verdict.outcome
    headline = HEADLINES[outcome].format(model=observation.model)
    if outcome == INCONCLUSIVE and observation.identities:
        headline = f"claim inconclusive on {observation.model}: " + "; ".join(observation.identities.values())
    lines = [headline + f": {observation.claim}"]
    if verdict.xfail_reason and outcome != CONTRADICTED:
        lines.append(f"expected failure not confirmed: the spec says it is contradicted ({verdict.xfail_reason})")
    if verdict.inconclusive_reason and outcome != INCONCLUSIVE:
        lines.append(
            f"the spec says this is inconclusive ({verdict.inconclusive_reason}); it is now decided: "
            f"{outcome} - update its `inconclusive:` key"
        )
    lines.append(f"spec {observation.spec_id} ({observation.path}:{observation.line})")
    for name, description in observation.configs.items():
        if name != "baseline":
            lines.append(f"  configuration {name}: {description}")
    for check in verdict.checks:
        if not check.ok:
            counts = {v: sum(r.verdict == v for r in check.rows) for v in (CONTRADICTED, INCONCLUSIVE)}
            tally = ", ".join(f"{n}/{len(check.rows)} rows {v}" for v, n in counts.items() if n)
            lines.append(f"check at line {check.line}: {check.description}  ({check.verdict}: {tally})")
            lines.extend(check_table(check, observation.confidence))
    return "\n".join(lines)
