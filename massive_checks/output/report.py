"""Text and machine-readable reports, from records only (records.Observation, records.Verdict):
the failure table, results.json, claims tables, the HTML page."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from massive_checks.base.files import atomic_write, jsonable
from massive_checks.language.intervals import CONFIDENCE, CONTRADICTED, HOLDS, INCONCLUSIVE, Estimate, SharedSet
from massive_checks.language.interventions import ranges
from massive_checks.language.measure import STATISTIC_TEXT
from massive_checks.output.records import ERROR, CheckVerdict, Observation, Row, Verdict, format_value, status_of


def check_table(check: CheckVerdict, confidence: float = CONFIDENCE, only_failures: bool = False) -> list[str]:
    rows = [r for r in check.rows if not (only_failures and r.ok)]
    cells = [("", "where", "expected", f"observed [{confidence:.0%} interval]", "")] + [
        (r.verdict, r.key, r.expected, format_value(r.observed, confidence), r.note) for r in rows
    ]
    widths = [max(len(str(row[i])) for row in cells) for i in range(5)]
    return ["  " + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]


HEADLINES = {
    "contradicted": "claim contradicted on {model} (an interval lies wholly outside its bound)",
    "inconclusive": "claim inconclusive on {model}: an interval straddles its bound, so this data cannot decide it",
    "holds": "claim holds on {model}",
}


def failure_text(observation: Observation, verdict: Verdict) -> str:
    outcome = verdict.outcome
    lines = [HEADLINES[outcome].format(model=observation.model) + f": {observation.claim}"]
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


def _row_record(row: Row) -> dict:
    value = row.observed
    record = {"where": row.key, "expected": row.expected, "ok": row.ok, "verdict": row.verdict}
    if isinstance(value, Estimate):
        record["observed"] = jsonable(value.value)
        record["interval"] = [jsonable(x) for x in row.interval] if row.interval else None
        record["units"] = value.units.text() if value.units else None
    else:
        record["observed"] = jsonable(value)
    if isinstance(value, SharedSet):
        record["shares"] = {str(k): v for k, v in value.shares.items()}
        record["units"] = value.units.text() if value.units else None
    if row.note:
        record["note"] = row.note
    return record


def outcome_record(observation: Observation, verdict: Verdict) -> dict:
    """The entry of one spec on one model in results.json."""
    return {
        **_header(observation, verdict),
        "status": status_of(verdict),
        "configs": observation.configs,
        "verdict": verdict.outcome,
        "confidence": observation.confidence,
        "checks": [
            {
                "key": c.key,
                "description": c.description,
                "line": c.line,
                "ok": c.ok,
                "verdict": c.verdict,
                **({"reference": c.reference} if c.reference else {}),
                "rows": [_row_record(r) for r in c.rows],
            }
            for c in verdict.checks
        ],
        "observed": observation.profiles,
        "observed_statistic": "paper",
        **({"samples": observation.samples} if observation.samples else {}),
    }


def error_record(observation: Observation, verdict: Verdict, error: Exception) -> dict:
    """A spec that could not be evaluated (numerics error, ...): in the report, never a verdict."""
    return {**_header(observation, verdict), "status": ERROR, "error": str(error), "configs": {}, "checks": [], "observed": {}}


def _header(observation: Observation, verdict: Verdict) -> dict:
    expected = CONTRADICTED if verdict.xfail_reason else INCONCLUSIVE if verdict.inconclusive_reason else HOLDS
    return {
        "spec": observation.spec_id,
        "model": observation.model,
        "claim": observation.claim,
        "source": observation.source,
        "path": observation.path,
        "line": observation.line,
        "xfail_reason": verdict.xfail_reason,
        "inconclusive_reason": verdict.inconclusive_reason,
        "expected": expected,
        "claims": list(observation.claims),
        "notes": observation.notes,
    }


def write_results(directory: Path, results: list[dict], models: dict, unavailable: dict) -> Path:
    document = {"statistics": STATISTIC_TEXT, "models": models, "unavailable": unavailable, "results": results}
    path = directory / "results.json"
    atomic_write(path, json.dumps(document, indent=1, default=jsonable))
    return path


# --------------------------------------------------------------------------- sentences and tables


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
        shown = _row_value(low, percent) if low is high else f"{_row_value(low, percent)} to {_row_value(high, percent)}"
        shown += f" (layers {ranges(layers)})"
    elif layers and len(layers) == len(values) > 1 and all(v == values[0] for v in values):  # e.g. {507} in every layer
        shown = f"{_paper_value(values[0], percent)} (layers {ranges(layers)})"
    else:
        shown = _row_value(rows[0], percent) + (f" (layer {layers[0]})" if layers else "")
    return f"{shown}; expected {rows[0]['expected']}"


def _row_value(row: dict, percent: bool = False) -> str:
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
                rows.setdefault(key, {})[r["model"]] = f"{_row_value(c['rows'][0])}: {c['verdict']}"
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


# --------------------------------------------------------------------------- HTML


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{font-size:1.5em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em}
.spec{border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:1em 0}
.badge{display:inline-block;padding:.1em .6em;border-radius:4px;color:#fff;font-weight:600;font-size:.85em}
.passed{background:#2e7d32}.failed{background:#c62828}.error{background:#37474f}.xfailed{background:#6a1b9a}.xpassed{background:#ef6c00}
.inconclusive,.undecided{background:#b8860b} tr.inconclusive td{background:#fff8e1}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}td,th{border:1px solid #ddd;padding:.15em .5em;text-align:left}
tr.bad td{background:#ffebee} table.matrix td{vertical-align:top;max-width:28em} img{max-width:100%;border:1px solid #eee;margin-top:.5em}
.meta{color:#666;font-size:.85em} details{margin:.3em 0}
"""
_SCRIPT = """
function onlyFailures(box){document.querySelectorAll('.spec').forEach(function(e){
  e.style.display=(box.checked&&!e.classList.contains('failing'))?'none':'';});}
"""


def escape(text) -> str:
    import html

    return html.escape(str(text))


def _check_html(check: dict) -> str:
    css = {HOLDS: "", CONTRADICTED: "bad", INCONCLUSIVE: "inconclusive"}
    rows = "".join(
        f"<tr class='{css.get(r.get('verdict'), 'bad')}'><td>{escape(r.get('verdict', ''))}</td><td>{escape(r['where'])}</td>"
        f"<td>{escape(r['expected'])}</td><td>{escape(_row_value(r))}</td><td>{escape(r.get('note', ''))}</td></tr>"
        for r in check["rows"]
    )
    failed = sum(not r["ok"] for r in check["rows"])
    return (
        f"<details {'open' if failed else ''}><summary>{escape(check['description'])} - "
        f"{escape(check.get('verdict', ''))}: {len(check['rows']) - failed}/{len(check['rows'])} rows hold</summary>"
        f"<table><tr><th></th><th>where</th><th>expected</th><th>observed [interval]</th><th></th></tr>{rows}</table></details>"
    )


def _image_html(directory: Path, record: dict) -> str:
    import base64

    figure = record.get("figure")
    if record.get("figure_error"):
        return f"<p class='meta'>figure failed: {escape(record['figure_error'])}</p>"
    if not figure or not (directory / figure).is_file():
        return "<p class='meta'>no figure</p>"
    data = base64.b64encode((directory / figure).read_bytes()).decode()
    return f"<img alt='figure for {escape(record['spec'])}' src='data:image/png;base64,{data}'>"


def _spec_html(directory: Path, record: dict) -> str:
    status = record.get("status", "failed")
    failing = status in ("failed", "xpassed", "error")
    badge = "inconclusive" if status == "failed" and record.get("verdict") == INCONCLUSIVE else status
    notes = f"<p class='meta'>expected failure: {escape(record['xfail_reason'])}</p>" if record.get("xfail_reason") else ""
    notes += (
        f"<p class='meta'>expected inconclusive: {escape(record['inconclusive_reason'])}</p>"
        if record.get("inconclusive_reason")
        else ""
    )
    notes += f"<p class='meta'>notes: {escape(record['notes'])}</p>" if record.get("notes") else ""
    notes += f"<p class='meta' style='color:#c62828'>{escape(record['error'])}</p>" if record.get("error") else ""
    configs = "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in record.get("configs", {}).items() if k != "baseline")
    golden = record.get("golden")
    return (
        f"<div class='spec{' failing' if failing else ''}' id='{escape(_anchor(record))}'><span class='badge {badge}'>{escape(badge)}</span> "
        f"<b>{escape(record['spec'])}</b><p>On <b>{escape(record['model'])}</b>: {escape(record['claim'])} - "
        f"<i>{escape(verdict(record))}</i></p>{notes}"
        f"<p class='meta'>source: {escape(record.get('source') or '-')}; spec {escape(record['path'])}:{record['line']}"
        f"{'; golden ' + escape(golden['status']) if golden else ''}</p>"
        f"{'<ul class=meta>' + configs + '</ul>' if configs else ''}"
        f"{''.join(_check_html(c) for c in record['checks'])}{_samples_html(record)}{_image_html(directory, record)}</div>"
    )


def _samples_html(record: dict) -> str:
    """Generated texts per steering configuration and coefficient (coef 0: the unsteered model)."""
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(coef)}</td><td>{escape(text)}</td></tr>"
        for name, by_coef in record.get("samples", {}).items()
        for coef, texts in by_coef.items()
        for text in texts
    )
    return (
        (
            f"<details><summary>generated samples</summary><table><tr><th>steering</th><th>coef</th><th>text</th></tr>"
            f"{rows}</table></details>"
        )
        if rows
        else ""
    )


def _anchor(record: dict) -> str:
    return f"{record['model']}--{record['spec']}"


def _matrix_html(results: list[dict]) -> str:
    """Catalogue claims x models: per cell, each spec encoding the claim with its verdict, value and
    interval, linking to its details."""
    models, rows = claims_matrix(results)
    if not rows:
        return ""
    head = "".join(f"<th>{escape(m)}</th>" for m in models)
    body = []
    for claim, text, by_model in rows:
        cells = []
        for m in models:
            records = by_model.get(m)
            cells.append(
                "<td class='meta'>no spec on this model</td>"
                if not records
                else "<td>"
                + "<br>".join(
                    f"<a href='#{escape(_anchor(r))}'><span class='badge {escape(_badge(r))}'>{escape(verdict(r))}</span></a> "
                    f"{escape(r['spec'])}: {escape(summary_value(r))}"
                    for r in records
                )
                + "</td>"
            )
        body.append(f"<tr><td><b>{escape(claim)}</b><br>{escape(text)}</td>{''.join(cells)}</tr>")
    return f"<h2>Claims x models</h2><table class='matrix'><tr><th>claim</th>{head}</tr>{''.join(body)}</table>"


def _reference_html(results: list[dict]) -> str:
    models, rows = reference_table(results)
    if not rows:
        return ""
    head = "".join(f"<th>{escape(m)}</th>" for m in models)
    body = "".join(
        f"<tr><td>{escape(claim)}</td><td>{escape(check)}</td><td>{escape(source)}</td>"
        + "".join(f"<td>{escape(by_model.get(m, '-'))}</td>" for m in models)
        + "</tr>"
        for claim, check, source, by_model in rows
    )
    return (
        f"<h2>The source's values vs the models'</h2><table class='matrix'><tr><th>claim</th><th>check</th>"
        f"<th>source</th>{head}</tr>{body}</table>"
    )


def _badge(record: dict) -> str:
    status = record.get("status", "failed")
    return "inconclusive" if status == "failed" and record.get("verdict") == INCONCLUSIVE else status


def write_html(directory: Path, results: list[dict], models: dict, unavailable: dict) -> Path:
    sections = [_matrix_html(results), _reference_html(results)]
    for model in sorted({r["model"] for r in results} | set(unavailable)):
        records = [r for r in results if r["model"] == model]
        counts = {
            s: sum(r.get("status") == s for r in records)
            for s in ("passed", "failed", "error", "xfailed", "undecided", "xpassed")
        }
        header = models.get(model, {})
        meta = ", ".join(f"{k} {v}" for k, v in header.items() if k != "model")
        problem = (
            f"<p class='meta' style='color:#c62828'>not loaded: {escape(unavailable[model])}</p>" if model in unavailable else ""
        )
        sections.append(
            f"<h2>{escape(model)}</h2><p class='meta'>{escape(meta)}</p>{problem}<p>"
            + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            + "</p>"
            + "".join(_spec_html(directory, r) for r in records)
        )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>massive_checks report</title>"
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body><h1>massive_checks: claims report</h1>"
        f"<label><input type='checkbox' onchange='onlyFailures(this)'> show only failures</label>"
        f"{''.join(sections)}<p class='meta'>machine-readable twin: results.json; claims tables: claims.md, claims.tex</p>"
        f"</body></html>"
    )
    path = directory / "index.html"
    atomic_write(path, page)
    return path


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


def write_all(directory: Path, results: list[dict], models: dict, unavailable: dict) -> None:
    results = sorted(results, key=lambda r: (r["model"], r["path"], r["line"]))
    write_results(directory, results, models, unavailable)
    atomic_write(directory / "observations.csv", observations_table(results).to_csv(index=False))
    atomic_write(directory / "claims.md", claims_markdown(results))
    atomic_write(directory / "claims.tex", claims_latex(results))
    write_html(directory, results, models, unavailable)
