"""Text and machine-readable reports: the failure table, results.json records."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .run import CheckResult, Outcome


def _fmt(value) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(map(str, sorted(value))) + "}"
    return str(value)


def check_table(check: CheckResult, only_failures: bool = False) -> list[str]:
    rows = [r for r in check.rows if not (only_failures and r.ok)]
    cells = [("", "where", "expected", "observed")] + [("ok" if r.ok else "FAIL", r.key, r.expected, _fmt(r.observed)) for r in rows]
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


def _jsonable(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    return value


def outcome_record(outcome: Outcome, lm) -> dict:
    spec = outcome.spec
    return {
        "spec": spec.id, "model": outcome.model, "claim": spec.claim, "source": spec.source,
        "path": spec.path, "line": spec.line, "status": "passed" if outcome.passed else "failed",
        "xfail_reason": spec.xfail, "configs": outcome.configs,
        "checks": [{"description": c.description, "line": c.line, "ok": c.ok,
                    "rows": [{"where": r.key, "expected": r.expected, "observed": _jsonable(r.observed), "ok": r.ok}
                             for r in c.rows]} for c in outcome.checks],
        "observed": outcome.observed,
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
    document = {"models": models, "unavailable": unavailable, "results": results}
    path = directory / "results.json"
    atomic_write(path, json.dumps(document, indent=1, default=_jsonable))
    return path
