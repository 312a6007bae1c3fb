"""Golden snapshots: the statistics a spec observes (never raw activations), as sorted, indented
JSON under golden/<model>/<spec-id>.json so that changes read well in a git diff.

Workflow (after pytest-regressions): a missing snapshot is written and the test fails saying so;
a mismatch writes <name>.obtained.json beside it and fails with a table; --update-golden rewrites
missing and failing snapshots, --update-golden=new only missing ones. A corrupt snapshot is an
error and is only overwritten with the flag."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from massive_checks.base.errors import GoldenError
from massive_checks.base.files import atomic_write, jsonable
from massive_checks.language.tolerance import GoldenConfig, Tolerance
from massive_checks.output.records import format_value

FORMAT = 1
IDENTITY = ("model", "revision", "dtype", "data", "intervals")  # differences here make values incomparable


@dataclass
class Mismatch:
    key: str
    expected: object
    observed: object
    tolerance: Tolerance | None  # None: compared exactly (sets, ints, strings)

    @property
    def abs_error(self) -> float | None:
        observed, expected = self.observed, self.expected
        return abs(observed - expected) if _is_number(observed) and _is_number(expected) else None

    @property
    def rel_error(self) -> float | None:
        err, expected = self.abs_error, self.expected
        return None if err is None or not _is_number(expected) else (err / abs(expected) if expected else math.inf)


@dataclass
class GoldenResult:
    status: str  # match | missing | written | updated | mismatch | metadata | corrupt
    path: Path
    mismatches: list[Mismatch] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("match", "updated")


def golden_path(root: Path, model: str, spec_id: str) -> Path:
    return root / model.replace("/", "__") / f"{spec_id}.json"


def obtained_path(path: Path) -> Path:
    return path.with_name(path.stem + ".obtained.json")


def metadata(observation) -> dict:
    """Everything a snapshot depends on (records.Observation); IDENTITY keys must match for values
    to be compared."""
    return {**observation.setup, "spec": observation.spec_id, "spec_path": observation.path, "claim": observation.claim}


def snapshot(values: dict, meta: dict) -> dict:
    return {"format": FORMAT, "meta": meta, "values": values}


def snapshot_of(observation, verdict) -> dict:
    """What a spec's golden holds (records.Observation, records.Verdict): every observed value
    with its interval ends and set shares, and each check's verdict."""
    values = {**observation.values(), **{f"verdict: {check.key}": check.verdict for check in verdict.checks}}
    return snapshot(values, metadata(observation))


def dumps(document: dict) -> str:
    """Indented JSON, keys in natural order ("layer 2" before "layer 10") for readable diffs."""
    return json.dumps(_natural(document), indent=1, default=jsonable) + "\n"


def _natural(value):
    if not isinstance(value, dict):
        return value
    order = lambda key: [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(key))]
    return {key: _natural(value[key]) for key in sorted(value, key=order)}


def read(path: Path) -> dict:
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GoldenError(f"golden {path} is corrupt ({exc}); fix it or rewrite it with --update-golden") from None
    if (
        not isinstance(document, dict)
        or document.get("format") != FORMAT
        or not isinstance(document.get("values"), dict)
        or not isinstance(document.get("meta"), dict)
    ):
        raise GoldenError(
            f"golden {path} is not a massive_checks snapshot (format {FORMAT}, with meta and values "
            f"mappings); fix it or rewrite it with --update-golden"
        )
    return document


def _not_a_directory(path: Path) -> None:
    if path.is_dir():
        raise GoldenError(f"golden {path} is a directory: remove it (--update-golden cannot replace a directory)")


def _write(path: Path, document: dict) -> None:
    """Atomic write; a file-system problem is a GoldenError saying so."""
    _not_a_directory(path)
    try:
        atomic_write(path, dumps(document))
    except OSError as exc:
        raise GoldenError(f"cannot write golden {path}: {exc.strerror or exc}") from None


def check(path: Path, obtained: dict, config: GoldenConfig, update: str | None) -> GoldenResult:
    """Compare `obtained` (a snapshot()) with the file at `path`, following the workflow above.
    update: None, "all" (rewrite missing and failing) or "new" (write missing only)."""
    _not_a_directory(path)  # before reading: a directory is not a corrupt snapshot to rewrite
    if not path.exists():
        _write(path, obtained)
        return GoldenResult("updated" if update else "missing", path, message=f"golden {path} was missing and has been written")
    try:
        expected = read(path)
    except GoldenError as exc:
        if update == "all":
            _write(path, obtained)
            return GoldenResult("updated", path, message=f"corrupt golden {path} rewritten")
        return GoldenResult("corrupt", path, message=str(exc))
    changed_identity = [k for k in IDENTITY if expected.get("meta", {}).get(k) != obtained["meta"].get(k)]
    mismatches = compare(expected["values"], obtained["values"], config)
    if not changed_identity and not mismatches:
        obtained_path(path).unlink(missing_ok=True)
        return GoldenResult("match", path)
    if update == "all":
        _write(path, obtained)
        obtained_path(path).unlink(missing_ok=True)
        return GoldenResult("updated", path, message=f"golden {path} updated")
    _write(obtained_path(path), obtained)
    if changed_identity:
        details = "; ".join(f"{k}: golden {expected['meta'].get(k)!r}, now {obtained['meta'].get(k)!r}" for k in changed_identity)
        return GoldenResult("metadata", path, mismatches, f"golden {path} was recorded on another setup: {details}")
    return GoldenResult("mismatch", path, mismatches, f"{len(mismatches)} value(s) differ from golden {path}")


def compare(expected: dict, observed: dict, config: GoldenConfig) -> list[Mismatch]:
    mismatches = []
    for key in sorted(set(expected) | set(observed)):
        want, got = expected.get(key), observed.get(key)
        if _is_number(want) and _is_number(got) and not isinstance(want, bool):
            tol = config.tolerance(key)
            same = want == got or (math.isnan(want) and math.isnan(got))  # an unbounded interval end: inf == inf
            finite = math.isfinite(want) and math.isfinite(got)  # a tolerance relative to inf admits anything
            if not same and not (finite and abs(got - want) <= tol.atol + tol.rtol * abs(want)):
                mismatches.append(Mismatch(key, want, got, tol))
        elif jsonable(want) != jsonable(got):
            mismatches.append(Mismatch(key, want, got, None))
    return mismatches


def mismatch_lines(result: GoldenResult, update_command: str, limit: int = 30) -> list[str]:
    lines = [result.message]
    if result.mismatches:
        header = ("key", "expected", "observed", "abs err", "rel err", "tolerance")
        rows = [header] + [
            (
                m.key,
                _cell(m.expected),
                _cell(m.observed),
                format_value(m.abs_error),
                format_value(m.rel_error),
                f"rtol {m.tolerance.rtol:g}, atol {m.tolerance.atol:g}" if m.tolerance else "exact",
            )
            for m in result.mismatches[:limit]
        ]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
        lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        if len(result.mismatches) > limit:
            lines.append(f"  ... and {len(result.mismatches) - limit} more (see {obtained_path(result.path)})")
    if result.status in ("mismatch", "metadata"):
        lines.append(f"obtained values: {obtained_path(result.path)}")
    if not result.ok:
        lines.append(f"to accept the new values: {update_command}")
    return lines


def _cell(value) -> str:
    """A value in one table cell: a text (a generated sample) quoted, its line breaks escaped, cut at 60 characters."""
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 60 else shown[:57] + '..."'
    return format_value(value)


def orphans(root: Path, collected_files: set[str], live: set[tuple[str, str]], applies, base: Path) -> list[Path]:
    """Snapshots whose spec or model no longer exists. Only spec files collected in this run are
    judged (a partial run says nothing of the others), plus snapshots whose spec file is gone.
    live: (spec id, spec file) pairs collected; applies(spec_file, spec_id, model) -> bool."""
    found = []
    for path in sorted(root.glob("*/*.json")):
        if path.name.endswith(".obtained.json"):
            continue
        try:
            meta = read(path)["meta"]
        except GoldenError:
            continue
        spec_file, spec_id, model = meta.get("spec_path", ""), meta.get("spec", path.stem), meta.get("model", "")
        if not (base / spec_file).exists():
            found.append(path)
        elif spec_file in collected_files and ((spec_id, spec_file) not in live or not applies(spec_file, spec_id, model)):
            found.append(path)
    return found


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
