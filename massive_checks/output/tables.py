"""Tables of results.json's records: the claims matrix (Markdown and LaTeX), the reference table,
the outcome of a record in words, and observations.csv."""

from __future__ import annotations

import functools
import json
import math
import re
from importlib import resources

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


NOT_TESTABLE = "not testable"


@functools.cache
def catalogue() -> dict[str, str]:
    """The claims' texts by id (C1-C18, the forms, L1-L12): massive_checks/data/claims.json."""
    return json.loads((resources.files("massive_checks") / "data/claims.json").read_text(encoding="utf-8"))


def claims_matrix(results: list[dict], unavailable: dict | None = None) -> tuple[list[str], list[tuple[str, str, dict]]]:
    """Models (columns) and one row per claim that specs of kind `claim` test (a spec naming no
    catalogue claim is its own row): (claim id, its text, {model: [records]}). Claims in catalogue
    order (C1, C2, ..., C10), then the rest. Measured specs are never in it (measured_rows)."""
    models = sorted({r["model"] for r in results} | set(unavailable or {}))
    rows: dict[str, dict] = {}
    texts: dict[str, str] = {}
    for r in results:
        if r.get("kind", "claim") != "claim":
            continue
        for claim in r.get("claims") or [r["spec"]]:
            rows.setdefault(claim, {}).setdefault(r["model"], []).append(r)
            texts.setdefault(claim, catalogue().get(claim, "") if r.get("claims") else r["claim"])
    order = lambda c: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", c)]
    return models, [(c, texts[c], rows[c]) for c in sorted(rows, key=lambda c: (not re.match(r"^[CL]\d", c), order(c)))]


def claim_verdict(records: list[dict] | None, unavailable: str | None = None) -> str:
    """One claim's verdict on one model from its specs there: contradicted when one is
    (an expected failure included), holds when all hold, undecided otherwise, and not testable
    (with the reason) when none was evaluated."""
    evaluated = [r for r in records or [] if r.get("status") != "error"]
    if not evaluated:
        if unavailable:
            return f"{NOT_TESTABLE}: {unavailable}"
        if records:
            return f"{NOT_TESTABLE}: " + records[0].get("error", "not evaluated").split(";")[0]
        return f"{NOT_TESTABLE}: no spec states it for this model"
    outcomes = {r.get("verdict") for r in evaluated}
    if CONTRADICTED in outcomes:
        return CONTRADICTED
    return HOLDS if outcomes == {HOLDS} else "undecided"


def _cell(records: list[dict] | None, unavailable: str | None = None) -> str:
    verdict_text = claim_verdict(records, unavailable)
    if not records or verdict_text.startswith(NOT_TESTABLE):
        return verdict_text
    return f"{verdict_text} ({'; '.join(_spec_summary(r) for r in records)})"


def _spec_summary(record: dict) -> str:
    return f"{record['spec']}: {summary_value(record)}"


def measured_rows(results: list[dict]) -> list[tuple[str, str, str, str]]:
    """Specs of kind `measured` (regression guards on a model's own numbers): (spec, model,
    outcome in words, value)."""
    return [(r["spec"], r["model"], verdict(r), summary_value(r)) for r in results if r.get("kind") == "measured"]


def claims_markdown(results: list[dict], unavailable: dict | None = None) -> str:
    unavailable = unavailable or {}
    models, rows = claims_matrix(results, unavailable)
    lines = [
        "# Claims matrix",
        "",
        "One row per claim that specs test (`kind: claim`), one verdict per model: holds, contradicted "
        "(an interval, or a counterexample, lies outside its bound), undecided, or not testable (why).",
        "",
        "| claim | " + " | ".join(models) + " |",
        "|---" * (len(models) + 1) + "|",
    ]
    for claim, text, by_model in rows:
        cells = [f"{claim}{': ' + text if text else ''}"] + [_cell(by_model.get(m), unavailable.get(m)) for m in models]
        lines.append(_markdown_row(cells))
    guards = measured_rows(results)
    if guards:
        lines += [
            "",
            "## Regression guards (`kind: measured`: bounds set from each model's own numbers, not a source's claim)",
            "",
            "| spec | model | outcome | value |",
            "|---|---|---|---|",
        ]
        lines += [_markdown_row(list(row)) for row in guards]
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


def claims_latex(results: list[dict], unavailable: dict | None = None) -> str:
    """The claims matrix as a longtable (it breaks across pages; its header repeats)."""
    unavailable = unavailable or {}
    models, rows = claims_matrix(results, unavailable)
    body = [
        " & ".join(
            _latex_escape(c)
            for c in [f"{claim}{': ' + text if text else ''}"]
            + [claim_verdict(by_model.get(m), unavailable.get(m)) for m in models]
        )
        + r" \\"
        for claim, text, by_model in rows
    ]
    columns = "p{7cm}" + "p{3cm}" * len(models)
    header = " & ".join(["Claim"] + [_latex_escape(m) for m in models]) + r" \\"
    return (
        "\n".join(
            [
                "% needs \\usepackage{longtable}",
                rf"\begin{{longtable}}{{{columns}}}",
                r"\hline",
                header,
                r"\hline",
                r"\endhead",
                *body,
                r"\hline",
                r"\end{longtable}",
            ]
        )
        + "\n"
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
