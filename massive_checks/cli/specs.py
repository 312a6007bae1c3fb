"""The commands about specs and models: check (the suite without pytest), schema, models."""

from __future__ import annotations

import json

from massive_checks.base.errors import MassiveChecksError
from massive_checks.engine import gguf_cache, models, shapes


def cmd_models(args) -> int:
    from massive_checks.engine.synthetic import BUILDERS

    if args.load:
        for name in args.load:
            facts = models.load(name).describe()
            print(f"{name}: {facts['architecture']}, revision {facts['revision']}, {facts['dtype']} on {facts['device']}")
        return 0
    print("\n".join([*gguf_cache.BUNDLED_GGUF, *BUILDERS]))
    print("\n".join(f"{name}  (random weights of a real shape, seed 0: for benchmarks only)" for name in shapes.random_names()))
    return 0


def cmd_check(args) -> int:
    """The suite without pytest: every spec on every model it applies to, reports written."""
    from pathlib import Path

    from massive_checks.base.constants import DEFAULTS_FILE
    from massive_checks.language.loading import load_file
    from massive_checks.output.records import AS_EXPECTED
    from massive_checks.output.text import failure_text
    from massive_checks.pipeline.suite import Suite, options_from

    files = [
        f
        for p in map(Path, args.paths)
        for f in (sorted(p.rglob("*.y*ml")) if p.is_dir() else [p])
        if f.suffix in (".yaml", ".yml") and f.name != DEFAULTS_FILE
    ]
    suite = Suite(options_from(lambda dest: getattr(args, dest), Path(".")))
    pairs = [(spec, model) for f in files for spec in load_file(f) for model in suite.options.models if spec.applies_to(model)]
    for spec, model in pairs:
        suite.plan(spec, model)
    false_claims = 0
    for spec, model in pairs:
        try:
            result = suite.run(spec, model)
        except MassiveChecksError as exc:
            print(f"ERROR  {spec.id} [{model}]: {exc}")
            false_claims += 1
            continue
        verdict, status = result.verdict, result.record["status"]
        print(f"{status.upper():9}  {spec.id} [{model}]  ({verdict.outcome})")
        if not verdict.as_expected:
            print(failure_text(result.observation, verdict))
        false_claims += status not in AS_EXPECTED
    suite.finish()
    for record in suite.figure_errors:
        print(f"FIGURE FAILED  {record['spec']} [{record['model']}]: {record['figure_error']}")
    if suite.report_error:
        print(f"REPORT NOT WRITTEN  {suite.report_error}")
    print(f"{len(pairs) - false_claims}/{len(pairs)} as expected; reports in {suite.report_dir()}")
    return 1 if false_claims or suite.figure_errors or suite.report_error else 0


def cmd_schema(args) -> int:
    from massive_checks.language.schema import json_schema

    print(json.dumps(json_schema(defaults=args.defaults), indent=1, sort_keys=True))
    return 0
