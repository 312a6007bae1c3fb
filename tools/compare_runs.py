"""Compare another run's golden snapshots and verdicts with the reference ones (e.g. a bfloat16 run
on CUDA against the float32 CPU goldens), each value within its spec's own golden tolerances,
whatever the setup metadata (dtype, device) says.

    python tools/compare_runs.py golden/ RUN/golden/ [--results reports/results.json RUN/results.json]

Get RUN/golden/ with `pytest specs/ ... --golden-dir RUN/golden --update-golden` on a copy of
golden/. Prints one line per snapshot (values compared, values outside the tolerances, the worst
relative error and its key) and, with --results, every (spec, model) whose status differs. Exit
status 1 when anything differs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from massive_checks.language import load_file, tolerance  # noqa: E402
from massive_checks.output import golden  # noqa: E402


def golden_configs(spec_root: Path) -> dict[str, tolerance.GoldenConfig]:
    """spec id -> its golden tolerances."""
    return {
        spec.id: spec.golden
        for path in sorted(spec_root.rglob("*.yaml"))
        if path.name != "_defaults.yaml"
        for spec in load_file(path)
        if spec.golden
    }


def worst_relative(expected: dict, observed: dict) -> tuple[float, str]:
    worst = (0.0, "")
    for key in expected.keys() & observed.keys():
        want, got = expected[key], observed[key]
        if golden._is_number(want) and golden._is_number(got) and not isinstance(want, bool) and want:
            worst = max(worst, (abs(got - want) / abs(want), key))
    return worst


def compare_goldens(reference: Path, other: Path, configs: dict) -> int:
    differing = 0
    for path in sorted(reference.glob("*/*.json")):
        if path.name.endswith(".obtained.json"):
            continue
        twin = other / path.parent.name / path.name
        if not twin.exists():
            print(f"{path.parent.name}/{path.stem}: not in {other}")
            differing += 1
            continue
        expected, observed = golden.read(path)["values"], golden.read(twin)["values"]
        config = configs.get(path.stem, tolerance.GoldenConfig())
        outside = golden.compare(expected, observed, config)
        rel, key = worst_relative(expected, observed)
        differing += bool(outside)
        print(
            f"{path.parent.name}/{path.stem}: {len(expected)} values, {len(outside)} outside tolerance; "
            f"worst relative error {rel:.2e}" + (f" ({key})" if rel else "")
        )
        for mismatch in outside[:5]:
            print(f"    {mismatch.key}: {mismatch.expected} vs {mismatch.observed}")
    return differing


def compare_results(reference: Path, other: Path) -> int:
    def statuses(path: Path) -> dict:
        return {(r["spec"], r["model"]): r["status"] for r in json.loads(path.read_text())["results"]}

    want, got = statuses(reference), statuses(other)
    changed = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    for spec, model in changed:
        print(f"verdict {spec} [{model}]: {want.get((spec, model))} -> {got.get((spec, model))}")
    print(f"verdicts: {len(want.keys() & got.keys())} compared, {len(changed)} differ")
    return len(changed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--results", nargs=2, type=Path, metavar=("REFERENCE", "OTHER"))
    parser.add_argument("--specs", type=Path, default=ROOT / "specs")
    args = parser.parse_args(argv)
    differing = compare_goldens(args.reference, args.other, golden_configs(args.specs))
    if args.results:
        differing += compare_results(*args.results)
    return int(bool(differing))


if __name__ == "__main__":
    sys.exit(main())
