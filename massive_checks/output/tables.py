"""Tables of results.json's records: the claims matrix (Markdown and LaTeX), the reference table,
the outcome of a record in words, and observations.csv."""

from __future__ import annotations

import math
import re

from massive_checks.language.intervals import CONTRADICTED, HOLDS, INCONCLUSIVE
from massive_checks.language.interventions import ranges


def verdict(record: dict) -> str:
    """The outcome in words: the verdict, and whether it is the one the spec expects."""
    status = record.get("status", "")
    if status == "error":
        return "not evaluated (error)"
    outcome = record.get("verdict", "")
    expected = record.get("expected", HOLDS)
    if status == "xfailed":
        return "contradicted, as expected (known false)"
    if status == "undecided":
        return "inconclusive, as expected (undecidable at this size)"
    if status == "xpassed":
        return "holds (a known-false claim passed)"
    if expected == CONTRADICTED and outcome != CONTRADICTED:
        return f"{outcome}: expected failure not confirmed"
    if expected == INCONCLUSIVE and outcome != INCONCLUSIVE:
        return f"{outcome}: now decided (expected inconclusive)"
    return outcome or {"passed": "holds", "failed": "does not hold"}.get(status, status or "?")


def summary_value(record: dict) -> str:
    """What a claims table shows for one spec on one model, written for a paper: its first check
    that does not hold (else its first), as a value with its interval (or a min..max over its
    layers), percent for relative changes, sets as {507}."""
    if record.get("error"):
        return record["error"].split(";")[0]
    checks = record["checks"]
    check = next((c for c in checks if not c["ok"]), checks[0] if checks else None)
    if check is None or not check["rows"]:
        return "-"
    percent = ", then relative change " in check["description"] and not check["description"].startswith(
        ("ratio of", "difference of")
    )
    rows = check["rows"]
    layers = [int(r["where"].split()[1]) for r in rows if r["where"].startswith("layer ")]
    values = [r["observed"] for r in rows]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if layers and len(layers) == len(values) > 1 and len(numbers) == len(values):
        low, high = min(rows, key=lambda r: r["observed"]), max(rows, key=lambda r: r["observed"])
        shown = row_value(low, percent) if low is high else f"{row_value(low, percent)} to {row_value(high, percent)}"
        shown += f" (layers {ranges(layers)})"
    elif layers and len(layers) == len(values) > 1 and all(v == values[0] for v in values):  # e.g. {507} in every layer
        shown = f"{_paper_value(values[0], percent)} (layers {ranges(layers)})"
    else:
        shown = row_value(rows[0], percent) + (f" (layer {layers[0]})" if layers else "")
    return f"{shown}; expected {rows[0]['expected']}"


def row_value(row: dict, percent: bool = False) -> str:
    """A row's value with its interval: `+256% [231%, 281%]`; a set with its shares of units."""
    shown = _paper_value(row["observed"], percent)
    if row.get("interval"):
        low, high = row["interval"]
        shown += f" [{_paper_value(low, percent)}, {_paper_value(high, percent)}]"
    if row.get("shares"):
        shown = "{" + ", ".join(f"{k} ({v:.0%})" for k, v in row["shares"].items()) + "}"
    return shown


def _paper_value(value, percent: bool = False) -> str:
    if isinstance(value, list):  # sets arrive from JSON as sorted lists
        return "{" + ", ".join(map(str, value)) + "}"
    if value is None:
        return "none"
    if isinstance(value, float) and percent:
        return f"{value:+.1%}" if math.isfinite(value) else str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def claims_matrix(results: list[dict]) -> tuple[list[str], list[tuple[str, str, dict]]]:
    """Models (columns) and one row per catalogue claim (a spec's `claims:`; a spec naming none is
    its own row): (claim id, text, {model: [records]}). Claims in catalogue order (C1, C2, ...,
    C10), then the rest."""
    models = sorted({r["model"] for r in results})
    rows: dict[str, dict] = {}
    texts: dict[str, str] = {}
    for r in results:
        for claim in r.get("claims") or [r["spec"]]:
            rows.setdefault(claim, {}).setdefault(r["model"], []).append(r)
            texts.setdefault(claim, r["claim"] if not r.get("claims") else "")
    order = lambda c: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", c)]
    return models, [(c, texts[c], rows[c]) for c in sorted(rows, key=lambda c: (not re.match(r"^C\d", c), order(c)))]


def _cell(records: list[dict] | None) -> str:
    if not records:
        return "-"
    return "; ".join(f"{r['spec']}: {verdict(r)}: {summary_value(r)}" for r in records)


def claims_markdown(results: list[dict]) -> str:
    models, rows = claims_matrix(results)
    lines = ["| claim | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for claim, text, by_model in rows:
        cells = [f"{claim}{': ' + text if text else ''}"] + [_cell(by_model.get(m)) for m in models]
        lines.append(_markdown_row(cells))
    table_models, references = reference_table(results)
    if references:
        lines += [
            "",
            "## The source's values vs the models'",
            "",
            "| claim | check | source | " + " | ".join(table_models) + " |",
            "|---" * (len(table_models) + 3) + "|",
        ]
        lines += [
            _markdown_row([claim, check, source] + [by_model.get(m, "-") for m in table_models])
            for claim, check, source, by_model in references
        ]
    return "\n".join(lines) + "\n"


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def reference_table(results: list[dict]) -> tuple[list[str], list[tuple[str, str, str, dict]]]:
    """Checks that carry a `reference` (the source's value), one row per (claims, check) across
    models: (claims, check description, reference, {model: "value [interval]: verdict"})."""
    models = sorted({r["model"] for r in results})
    rows: dict[tuple, dict] = {}
    for r in results:
        for c in r.get("checks", []):
            if c.get("reference") and c["rows"]:
                key = (" ".join(r.get("claims") or [r["spec"]]), c["description"], c["reference"])
                rows.setdefault(key, {})[r["model"]] = f"{row_value(c['rows'][0])}: {c['verdict']}"
    return models, [(*key, by_model) for key, by_model in rows.items()]


def _latex_escape(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("$", r"\$"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("{", r"\{"),
        ("}", r"\}"),
        ("~", r"\textasciitilde{}"),
        ("^", r"\textasciicircum{}"),
    ):
        text = text.replace(a, b)
    return text.replace("\n", " ")


def claims_latex(results: list[dict]) -> str:
    models, rows = claims_matrix(results)
    body = [
        " & ".join(_latex_escape(c) for c in [f"{claim}{': ' + text if text else ''}"] + [_cell(by_model.get(m)) for m in models])
        + r" \\"
        for claim, text, by_model in rows
    ]
    columns = "p{6cm}" + "p{4.5cm}" * len(models)
    header = " & ".join(["Claim"] + [_latex_escape(m) for m in models]) + r" \\"
    return (
        "\n".join([rf"\begin{{tabular}}{{{columns}}}", r"\hline", header, r"\hline", *body, r"\hline", r"\end{tabular}"]) + "\n"
    )


def observations_table(results: list[dict]):
    """A tidy table for notebooks (pandas): one row per spec, model, check and row (layer), with
    value, interval, bound, verdict and the spec's status."""
    import pandas as pd

    columns = [
        "spec",
        "model",
        "claims",
        "check",
        "line",
        "where",
        "value",
        "low",
        "high",
        "units",
        "expected",
        "verdict",
        "check_verdict",
        "spec_verdict",
        "status",
        "note",
    ]
    rows = []
    for r in results:
        for c in r.get("checks", []):
            for row in c["rows"]:
                interval = row.get("interval") or [None, None]
                rows.append(
                    {
                        "spec": r["spec"],
                        "model": r["model"],
                        "claims": " ".join(r.get("claims", [])),
                        "check": c["key"],
                        "line": c["line"],
                        "where": row["where"],
                        "value": _csv_value(row["observed"]),
                        "low": _csv_value(interval[0]),
                        "high": _csv_value(interval[1]),
                        "units": row.get("units"),
                        "expected": row["expected"],
                        "verdict": row.get("verdict"),
                        "check_verdict": c.get("verdict"),
                        "spec_verdict": r.get("verdict"),
                        "status": r.get("status"),
                        "note": row.get("note", ""),
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def _csv_value(value):
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return " ".join(map(str, value)) if isinstance(value, list) else value
