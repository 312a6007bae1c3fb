"""A report folder, from records only: results.json (results.py), observations.csv and the claims
tables (tables.py), the HTML page (html.py). The failure text is text.py's."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from massive_checks.base.errors import ReportError
from massive_checks.base.files import atomic_write, folder_lock
from massive_checks.output.html import write_html
from massive_checks.output.results import write_results
from massive_checks.output.tables import claims_latex, claims_markdown, observations_table


def write_all(directory: Path, results: list[dict], models: dict, unavailable: dict) -> None:
    """Every report file, each written atomically, all under the folder's lock (two runs sharing a
    folder write one after the other). A file that cannot be written (a full disk, no permission)
    is a ReportError saying which; the files not yet written keep their earlier version."""
    results = sorted(results, key=lambda r: (r["model"], r["path"], r["line"]))
    texts = generated_texts(results)
    results = [{k: v for k, v in r.items() if k != "texts"} for r in results]
    try:
        with folder_lock(directory):
            for model, lines in texts.items():
                atomic_write(directory / "texts" / f"{model.replace('/', '__')}.jsonl.gz", _gzipped(lines))
            write_results(directory, results, models, unavailable)
            atomic_write(directory / "observations.csv", observations_table(results).to_csv(index=False))
            atomic_write(directory / "claims.md", claims_markdown(results, unavailable))
            atomic_write(directory / "claims.tex", claims_latex(results, unavailable))
            write_html(directory, results, models, unavailable)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise ReportError(
            f"cannot write the report in {directory}{where}: {exc.strerror or exc}; no file there is partial "
            "(each is its earlier version or this run's)"
        ) from None


def generated_texts(results: list[dict]) -> dict[str, list[dict]]:
    """Every steered text of the run, per model, once each (specs share configurations): one line
    per (configuration, coefficient, prompt) with the prompt and its continuation."""
    seen: dict[str, dict[tuple, dict]] = {}
    for record in results:
        for label, by_coef in record.get("texts", {}).items():
            prompts = by_coef.get("prompts", [])
            for coef, texts in by_coef.items():
                if coef == "prompts":
                    continue
                for i, text in enumerate(texts):
                    line = {
                        "steering": label,
                        "coef": coef,
                        "prompt_index": i,
                        "prompt": prompts[i] if i < len(prompts) else None,
                        "text": text,
                    }
                    seen.setdefault(record["model"], {})[(label, coef, i)] = line
    return {model: list(lines.values()) for model, lines in seen.items()}


def _gzipped(lines: list[dict]) -> bytes:
    """JSON lines, gzip-compressed with a fixed timestamp (the same texts: the same bytes)."""
    body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
    return gzip.compress(body, mtime=0)
