"""A report folder, from records only: results.json (results.py), observations.csv and the claims
tables (tables.py), the HTML page (html.py). The failure text is text.py's."""

from __future__ import annotations

from pathlib import Path

from massive_checks.base.files import atomic_write
from massive_checks.output.html import write_html
from massive_checks.output.results import write_results
from massive_checks.output.tables import claims_latex, claims_markdown, observations_table

# --------------------------------------------------------------------------- sentences and tables


# --------------------------------------------------------------------------- HTML


def write_all(directory: Path, results: list[dict], models: dict, unavailable: dict) -> None:
    results = sorted(results, key=lambda r: (r["model"], r["path"], r["line"]))
    write_results(directory, results, models, unavailable)
    atomic_write(directory / "observations.csv", observations_table(results).to_csv(index=False))
    atomic_write(directory / "claims.md", claims_markdown(results))
    atomic_write(directory / "claims.tex", claims_latex(results))
    write_html(directory, results, models, unavailable)
