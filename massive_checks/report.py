"""Text and machine-readable reports: the failure table, results.json records."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .measures import format_value
from .run import STATISTIC_TEXT, CheckResult, Outcome


def check_table(check: CheckResult, only_failures: bool = False) -> list[str]:
    rows = [r for r in check.rows if not (only_failures and r.ok)]
    cells = [("", "where", "expected", "observed")] + [("ok" if r.ok else "FAIL", r.key, r.expected, format_value(r.observed)) for r in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(4)]
    return ["  " + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]


def failure_text(outcome: Outcome) -> str:
    spec = outcome.spec
    lines = [f"claim not supported on {outcome.model}: {spec.claim}", f"spec {spec.id} ({spec.path}:{spec.line})"]
    for name, description in outcome.configs.items():
        if name != "baseline":
            lines.append(f"  configuration {name}: {description}")
    for check in outcome.checks:
        if not check.ok:
            failed = sum(not r.ok for r in check.rows)
            lines.append(f"check at line {check.line}: {check.description}  ({failed}/{len(check.rows)} rows fail)")
            lines.extend(check_table(check))
    return "\n".join(lines)


def jsonable(value):
    """Sets -> sorted lists, tuples -> lists, inf/nan -> strings: JSON-safe and comparable."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    return value


def outcome_record(outcome: Outcome, lm) -> dict:
    spec = outcome.spec
    return {
        "spec": spec.id, "model": outcome.model, "claim": spec.claim, "source": spec.source,
        "path": spec.path, "line": spec.line, "status": "passed" if outcome.passed else "failed",
        "xfail_reason": spec.xfail, "notes": spec.notes, "configs": outcome.configs,
        "checks": [{"description": c.description, "line": c.line, "ok": c.ok,
                    "rows": [{"where": r.key, "expected": r.expected, "observed": jsonable(r.observed), "ok": r.ok}
                             for r in c.rows]} for c in outcome.checks],
        "observed": outcome.observed, "observed_statistic": "paper",
    }


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(directory: Path, results: list[dict], models: dict, unavailable: dict) -> Path:
    document = {"statistics": STATISTIC_TEXT, "models": models, "unavailable": unavailable, "results": results}
    path = directory / "results.json"
    atomic_write(path, json.dumps(document, indent=1, default=jsonable))
    return path


# --------------------------------------------------------------------------- sentences and tables


def verdict(record: dict) -> str:
    return {"passed": "holds", "failed": "does not hold", "xfailed": "fails as expected (known false)",
            "xpassed": "unexpectedly holds (known-false claim passed)"}.get(record.get("status", ""), record.get("status", "?"))


def summary_value(record: dict) -> str:
    """One observed value that speaks for the spec: its first failing row, or its first row."""
    rows = [r for c in record["checks"] for r in c["rows"]]
    row = next((r for r in rows if not r["ok"]), rows[0] if rows else None)
    if row is None:
        return "-"
    observed = row["observed"]
    shown = f"{observed:.4g}" if isinstance(observed, float) else str(observed)
    return f"{shown} ({row['where']}; expected {row['expected']})"


def claims_markdown(results: list[dict]) -> str:
    lines = ["| claim | model | observed | verdict |", "|---|---|---|---|"]
    for r in results:
        cells = [r["claim"], r["model"], summary_value(r), verdict(r)]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
                 ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")):
        text = text.replace(a, b)
    return text.replace("\n", " ")


def claims_latex(results: list[dict]) -> str:
    rows = [" & ".join(_latex_escape(c) for c in (r["claim"], r["model"], summary_value(r), verdict(r))) + r" \\"
            for r in results]
    return "\n".join([r"\begin{tabular}{p{7cm}lp{4cm}l}", r"\hline", r"Claim & Model & Observed & Verdict \\",
                      r"\hline", *rows, r"\hline", r"\end{tabular}"]) + "\n"


# --------------------------------------------------------------------------- HTML


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{font-size:1.5em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em}
.spec{border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:1em 0}
.badge{display:inline-block;padding:.1em .6em;border-radius:4px;color:#fff;font-weight:600;font-size:.85em}
.passed{background:#2e7d32}.failed{background:#c62828}.xfailed{background:#6a1b9a}.xpassed{background:#ef6c00}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}td,th{border:1px solid #ddd;padding:.15em .5em;text-align:left}
tr.bad td{background:#ffebee} img{max-width:100%;border:1px solid #eee;margin-top:.5em}
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
    rows = "".join(
        f"<tr class='{'' if r['ok'] else 'bad'}'><td>{'ok' if r['ok'] else 'FAIL'}</td><td>{escape(r['where'])}</td>"
        f"<td>{escape(r['expected'])}</td><td>{escape(format_value(r['observed']))}</td></tr>" for r in check["rows"])
    failed = sum(not r["ok"] for r in check["rows"])
    return (f"<details {'open' if failed else ''}><summary>{escape(check['description'])} - "
            f"{len(check['rows']) - failed}/{len(check['rows'])} rows hold</summary>"
            f"<table><tr><th></th><th>where</th><th>expected</th><th>observed</th></tr>{rows}</table></details>")


def _image_html(directory: Path, record: dict) -> str:
    import base64

    figure = record.get("figure")
    if not figure or not (directory / figure).is_file():
        return "<p class='meta'>no figure</p>"
    data = base64.b64encode((directory / figure).read_bytes()).decode()
    return f"<img alt='figure for {escape(record['spec'])}' src='data:image/png;base64,{data}'>"


def _spec_html(directory: Path, record: dict) -> str:
    status = record.get("status", "failed")
    failing = status in ("failed", "xpassed")
    notes = f"<p class='meta'>expected failure: {escape(record['xfail_reason'])}</p>" if record.get("xfail_reason") else ""
    notes += f"<p class='meta'>notes: {escape(record['notes'])}</p>" if record.get("notes") else ""
    configs = "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in record.get("configs", {}).items() if k != "baseline")
    golden = record.get("golden")
    return (f"<div class='spec{' failing' if failing else ''}'><span class='badge {status}'>{escape(status)}</span> "
            f"<b>{escape(record['spec'])}</b><p>On <b>{escape(record['model'])}</b>: {escape(record['claim'])} - "
            f"<i>{escape(verdict(record))}</i></p>{notes}"
            f"<p class='meta'>source: {escape(record.get('source') or '-')}; spec {escape(record['path'])}:{record['line']}"
            f"{'; golden ' + escape(golden['status']) if golden else ''}</p>"
            f"{'<ul class=meta>' + configs + '</ul>' if configs else ''}"
            f"{''.join(_check_html(c) for c in record['checks'])}{_image_html(directory, record)}</div>")


def write_html(directory: Path, results: list[dict], models: dict, unavailable: dict) -> Path:
    sections = []
    for model in sorted({r["model"] for r in results} | set(unavailable)):
        records = [r for r in results if r["model"] == model]
        counts = {s: sum(r.get("status") == s for r in records) for s in ("passed", "failed", "xfailed", "xpassed")}
        header = models.get(model, {})
        meta = ", ".join(f"{k} {v}" for k, v in header.items() if k != "model")
        problem = f"<p class='meta' style='color:#c62828'>not loaded: {escape(unavailable[model])}</p>" if model in unavailable else ""
        sections.append(f"<h2>{escape(model)}</h2><p class='meta'>{escape(meta)}</p>{problem}<p>"
                        + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "</p>"
                        + "".join(_spec_html(directory, r) for r in records))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>massive_checks report</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body><h1>massive_checks: claims report</h1>"
            f"<label><input type='checkbox' onchange='onlyFailures(this)'> show only failures</label>"
            f"{''.join(sections)}<p class='meta'>machine-readable twin: results.json; claims tables: claims.md, claims.tex</p>"
            f"</body></html>")
    path = directory / "index.html"
    atomic_write(path, page)
    return path


def write_all(directory: Path, results: list[dict], models: dict, unavailable: dict) -> None:
    results = sorted(results, key=lambda r: (r["model"], r["path"], r["line"]))
    write_results(directory, results, models, unavailable)
    atomic_write(directory / "claims.md", claims_markdown(results))
    atomic_write(directory / "claims.tex", claims_latex(results))
    write_html(directory, results, models, unavailable)
