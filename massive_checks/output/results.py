"""results.json: one record per spec and model, with every observed number, its verdict and status."""

from __future__ import annotations

import json
from pathlib import Path

from massive_checks.base.files import atomic_write, jsonable
from massive_checks.language.intervals import CONTRADICTED, HOLDS, INCONCLUSIVE, Estimate, SharedSet
from massive_checks.language.measure import STATISTIC_TEXT
from massive_checks.output.records import ERROR, GOLDEN_SAMPLES, Observation, Row, Verdict, shown_texts, status_of


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


def outcome_record(observation: Observation, verdict: Verdict, golden_ok: bool = True) -> dict:
    """The entry of one spec on one model in results.json (golden_ok: its golden snapshot matched,
    or it keeps none)."""
    return {
        **_header(observation, verdict),
        "status": status_of(verdict, golden_ok),
        "data": _data_of(observation.setup),
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
        **({"samples": _samples(observation.samples), "texts": observation.samples} if observation.samples else {}),
    }


def _samples(samples: dict) -> dict:
    """The first few texts per coefficient (the page's); "texts" holds all, written by report.py
    to a compressed file per model and not kept in results.json."""
    return {label: {coef: t[:GOLDEN_SAMPLES] for coef, t in shown_texts(by_coef).items()} for label, by_coef in samples.items()}


def _data_of(setup: dict) -> dict:
    """What the numbers were read from (dataset, samples, token ids' hash, a hub dataset's
    revision); of a spec across models, per model."""
    if "models" in setup:
        return {model: its.get("data", {}) for model, its in setup["models"].items()}
    return setup.get("data", {})


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
        "kind": observation.kind,
        "notes": observation.notes,
    }


def write_results(directory: Path, results: list[dict], models: dict, unavailable: dict) -> Path:
    document = {"statistics": STATISTIC_TEXT, "models": models, "unavailable": unavailable, "results": results}
    path = directory / "results.json"
    atomic_write(path, json.dumps(document, indent=1, default=jsonable))
    return path
