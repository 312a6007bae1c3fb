"""The HTML page of a report folder: the claims matrix, the reference table and each spec's checks,
figure and generated texts, from results.json's records."""

from __future__ import annotations

from pathlib import Path

from massive_checks.base.files import atomic_write
from massive_checks.language.intervals import CONTRADICTED, HOLDS, INCONCLUSIVE
from massive_checks.output.tables import claims_matrix, reference_table, row_value, summary_value, verdict

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
        f"<td>{escape(r['expected'])}</td><td>{escape(row_value(r))}</td><td>{escape(r.get('note', ''))}</td></tr>"
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
