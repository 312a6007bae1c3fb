"""`massive-checks` command line: quick profiles, head scores, checkpoint scans, steering vectors."""

from __future__ import annotations

import argparse
import json
import math
import sys

from massive_checks.steering import coherence
from massive_checks.language import interventions
from massive_checks.engine import readings, models
from massive_checks.language.data import BUILTIN, DataConfig
from massive_checks.base.constants import MASSIVE_RULE
from massive_checks.base.errors import MassiveChecksError
from massive_checks.measures.profile import profile_document
from massive_checks.base.options import add_suite_options
from massive_checks.engine.session import ModelSession


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help=f"hub id (NAME@REVISION), local directory or .gguf file, {models.BUNDLED}, or a synthetic model"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--device-map",
        default=None,
        choices=models.DEVICE_MAPS,
        help="spread models larger than one device over all GPUs, with accelerate",
    )
    parser.add_argument("--dtype", default="float32", choices=sorted(models.DTYPES))
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _massive_options(parser) -> None:
    parser.add_argument("--min-value", type=float, default=MASSIVE_RULE[0], help="massive: |a| above this")
    parser.add_argument("--min-ratio", type=float, default=MASSIVE_RULE[1], help="massive: |a| / median at least this")


def _data_options(parser: argparse.ArgumentParser) -> None:
    _model_options(parser)
    parser.add_argument("--dataset", default=BUILTIN, help=".txt (one passage per line) or .jsonl ('text')")
    parser.add_argument("--samples", type=int, default=DataConfig().samples)
    parser.add_argument("--seq-len", type=int, default=DataConfig().seq_len)


def _vector_options(parser: argparse.ArgumentParser, layer_help: str) -> None:
    _model_options(parser)
    parser.add_argument("--pairs", required=True, help="contrast set: refusal, sentiment, or a JSONL file (text, label pos|neg)")
    parser.add_argument("--layer", type=int, required=True, help=layer_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="massive-checks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    profile = commands.add_parser("profile", help="layer-wise top-1/2/3, median, ratio and massive activations")
    _data_options(profile)
    profile.add_argument(
        "--ablate",
        action="append",
        default=[],
        metavar="X",
        help="intervention, repeatable: attn:all, mlp:2,3, heads:5.1,6.1, dims:447@all, ...",
    )
    _massive_options(profile)
    heads = commands.add_parser("heads", help="per-head mean attention to position 0 (queries q >= 1)")
    _data_options(heads)
    scan = commands.add_parser("scan", help="profile a checkpoint; write a report, a draft spec and its golden")
    _data_options(scan)
    scan.add_argument("--out", default=None, help="output directory (default reports/scan-<model>)")
    diff = commands.add_parser("diff", help="compare two checkpoints' massive activations")
    _data_options(diff)
    diff.add_argument("other", help="the second model")
    vectors = commands.add_parser(
        "vectors", help="steering vectors at one layer: mean_diff, probe, cleaned; geometry, norms, calibration"
    )
    _vector_options(vectors, "block output (0-based)")
    vectors.add_argument("--window", required=True, help="tokens pooled per example: last:K, first:K (of the response) or all")
    _massive_options(vectors)
    steer = commands.add_parser(
        "steer",
        help="steer with a vector at coefficients (coef 0, the unsteered model, first); judged trait, "
        "trait_logit and coherence with intervals over prompts, generated texts",
    )
    _vector_options(steer, "block whose output is steered (and the vector's layer)")
    steer.add_argument(
        "--method",
        required=True,
        choices=["mean_diff", "probe", "pca", "mean_diff_cleaned", "probe_cleaned", "pca_cleaned"],
        help="vector (_cleaned: massive dims zeroed)",
    )
    steer.add_argument("--window", default="first:5", help="the vector's pooled tokens (default first:5, the seed's)")
    steer.add_argument("--coef", type=float, action="append", required=True, help="coefficient of the unit vector (repeatable)")
    steer.add_argument(
        "--prompts",
        default=None,
        help="evaluation prompts: a built-in set (refusal, sentiment), a .txt file "
        '(one prompt per line, used as given) or a .jsonl file of {"prompt": ..}; '
        "default: the built-in set named like --pairs",
    )
    steer.add_argument("--n-prompts", type=int, default=None, help="use the first N prompts (default: all of the set)")
    steer.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    steer.add_argument("--max-new-tokens", type=int, default=32)
    steer.add_argument(
        "--judge",
        default=None,
        help="trait judge: vader, refusal, an entry point of group massive_checks.judges "
        "or module:function (default: the contrast set's, e.g. refusal -> refusal)",
    )
    steer.add_argument("--judge-model", default=None, help="model judging fluency (default: the other bundled model)")
    steer.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    steer.add_argument("--trait-pos", action="append", help="trait continuation (repeatable; default: the set's own)")
    steer.add_argument("--trait-neg", action="append", help="anti-trait continuation (repeatable)")
    listing = commands.add_parser("models", help="list built-in model names, or load models once (warms their caches)")
    listing.add_argument(
        "--load",
        action="append",
        metavar="MODEL",
        help="load this model (repeatable): a first use downloads or dequantizes it into its cache, so a CI "
        "set-up step can do that before the suite; prints what loaded",
    )
    check = commands.add_parser(
        "check", help="run spec files without pytest (exit 1 if a claim fails): the plugin's suite and options"
    )
    check.add_argument("paths", nargs="+", help="spec files or directories")
    add_suite_options(check.add_argument)
    schema = commands.add_parser("schema", help="print the JSON Schema of spec files (editors validate and complete with it)")
    schema.add_argument("--defaults", action="store_true", help="the schema of _defaults.yaml files instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    notice = lambda message: print(f"massive-checks: {message}", file=sys.stderr)  # noqa: E731
    models.NOTICES.append(notice)
    try:
        return COMMANDS[args.command](args)
    except (MassiveChecksError, ValueError) as exc:
        print(f"massive-checks: error: {exc}", file=sys.stderr)
        return 2
    finally:
        models.NOTICES.remove(notice)


def _session(args) -> tuple[ModelSession, DataConfig]:
    lm = models.load(args.model, args.device, args.dtype, device_map=args.device_map)
    return ModelSession(lm), DataConfig(dataset=args.dataset, samples=args.samples, seq_len=args.seq_len)


def cmd_profile(args) -> int:
    session, data = _session(args)
    intervention = session.resolve(data, [interventions.parse(x) for x in args.ablate])
    document = profile_document(session.view(data, intervention, (args.min_value, args.min_ratio)))
    if args.json:
        print(json.dumps(document, indent=1))
        return 0
    print(f"{document['model']}  ({document['intervention']})")
    print(f"{'layer':>5}  {'top1':>10} {'dim':>5} {'tok':>4}  {'top2':>10}  {'top3':>10}  {'median':>8}  {'ratio':>9}")
    for row in document["layers"]:
        t = row["top"]
        print(
            f"{row['layer']:>5}  {t[0]['value']:>10.4g} {t[0]['dim']:>5} {t[0]['token']:>4}  {t[1]['value']:>10.4g}  "
            f"{t[2]['value']:>10.4g}  {row['median']:>8.4g}  {row['ratio']:>9.4g}"
        )
    dims = sorted({m["dim"] for m in document["massive"]})
    print(f"massive dims: {dims or 'none'}; tokens: {sorted({m['token'] for m in document['massive']}) or 'none'}")
    return 0


def cmd_heads(args) -> int:
    session, data = _session(args)
    table = readings.head_score_table(session.view(data), "first")  # [L, H]
    rows = [{"layer": L, "head": H, "score": float(table[L, H])} for L in range(table.shape[0]) for H in range(table.shape[1])]
    rows.sort(key=lambda r: (-r["score"], r["layer"], r["head"]))
    if args.json:
        print(json.dumps({"model": args.model, "heads": rows}, indent=1))
    else:
        for r in rows:
            print(f"L{r['layer']}H{r['head']}  {r['score']:.4f}")
    return 0


def cmd_scan(args) -> int:
    from pathlib import Path

    from massive_checks.pipeline.scan import scan

    lm = models.load(args.model, args.device, args.dtype, device_map=args.device_map)
    out = Path(args.out or f"reports/scan-{args.model.replace('/', '__')}")
    summary = scan(
        args.model, lm, DataConfig(dataset=args.dataset, samples=args.samples, seq_len=args.seq_len), out, progress=not args.json
    )
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(
            f"{args.model}: massive dims {summary['massive_dims'] or 'none'}, tokens {summary['massive_tokens']}, "
            f"emerging at block {summary['emergence_layer']}; report {out / 'index.html'}; "
            f"draft spec {out / 'specs'}; golden {out / 'golden'}"
        )
        print(f"check the draft: pytest {out / 'specs'} --model {args.model} --golden-dir {out / 'golden'}")
    return 0


def cmd_diff(args) -> int:
    from massive_checks.pipeline.scan import diff, profile_summary

    data = DataConfig(dataset=args.dataset, samples=args.samples, seq_len=args.seq_len)
    summaries = [
        profile_summary(ModelSession(models.load(name, args.device, args.dtype, device_map=args.device_map)), data)
        for name in (args.model, args.other)
    ]
    result = diff(*summaries)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{'layer':>5}  {result['a'][:18]:>18}  {result['b'][:18]:>18}  {'change':>9}")
    for row in result["layers"]:
        print(
            f"{row['layer']:>5}  {row['top1_a']:>12.4g} d{row['dim_a']:<5}  {row['top1_b']:>12.4g} d{row['dim_b']:<5}  "
            f"{row['change']:>+9.1%}"
        )
    for key in ("massive_dims", "massive_tokens", "emergence_layer"):
        print(f"{key}: {result['a']} {result[key]['a']}  vs  {result['b']} {result[key]['b']}")
    return 0


def cmd_vectors(args) -> int:
    from massive_checks.language.definitions import Window
    from massive_checks.measures.steering import vectors_document

    window = Window.parse(args.window).text()
    lm = models.load(args.model, args.device, args.dtype, device_map=args.device_map)
    lm.check_layer(args.layer, f"--layer {args.layer}")
    document = vectors_document(ModelSession(lm), args.pairs, args.layer, window, (args.min_value, args.min_ratio))
    if args.json:
        print(json.dumps(document, indent=1))
        return 0
    print(
        f"{document['model']}  layer {args.layer}, window {window}, {document['counts']['pos']} pos / "
        f"{document['counts']['neg']} neg; massive dims {document['massive_dims'] or 'none'}"
    )
    for pair, value in document["cosine"].items():
        print(f"  cosine {pair:<34} {value:.4f}")
    for name, value in document["energy"].items():
        print(f"  energy of {name} in the massive dims  {value:.4f}")
    norm, calibration = document["norm"], document["calibration"]
    print(
        f"  activation norm {norm['with']:.4g} with the massive dims, {norm['without']:.4g} without "
        f"(share of the squared norm {norm['share']:.4f})"
    )
    print(f"  base coefficient {calibration['with']:.4g} with, {calibration['without']:.4g} without")
    print(
        f"  probe accuracy: train {document['probe_accuracy']['train']:.3f}, held out {document['probe_accuracy']['heldout']:.3f}"
    )
    return 0


def cmd_steer(args) -> int:
    from massive_checks.language import contrast, judges
    from massive_checks.steering import steer
    from massive_checks.language.definitions import Window
    from massive_checks.language.intervals import Bootstrap
    from massive_checks.measures.steering import named_definition, vector_of
    from massive_checks.measures.sweeps import SweepOutcome

    lm = models.load(args.model, args.device, args.dtype, device_map=args.device_map)
    lm.check_layer(args.layer, f"--layer {args.layer}")
    definition = named_definition(args.method, args.pairs, args.layer, Window.parse(args.window).text())
    session = ModelSession(lm, judge_model=args.judge_model)
    vector = vector_of(session.view(DataConfig(), vectors={"v": definition}), "v").values
    prompt_set = args.prompts or args.pairs
    texts = contrast.eval_prompts(prompt_set, args.n_prompts)
    if args.chat:
        texts = [
            lm.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts
        ]
    prompts = [lm.tokenizer(t)["input_ids"] for t in texts]
    words = {"pos": args.trait_pos, "neg": args.trait_neg}
    if not all(words.values()):
        if args.pairs not in contrast.TRAITS:
            raise ValueError(f"{args.pairs}: give the trait_logit's continuations with --trait-pos and --trait-neg")
        words = contrast.TRAITS[args.pairs]
    judge_name = args.judge or judges.DEFAULT_FOR_SET.get(args.pairs)
    if judge_name is None:
        raise ValueError(f"{args.pairs}: no default trait judge; give --judge (vader, refusal, or module:function)")
    judging = steer.Judging(judge_name, judges.trait_judge(judge_name), coherence.fluency_model(session))
    coefs = [0.0] + [c for c in args.coef if c != 0]
    results = steer.run(
        lm,
        vector,
        args.layer,
        coefs,
        prompts,
        texts,
        steer.encode_trait(lm.tokenizer, words),
        args.max_new_tokens,
        judging,
        args.positions,
    )
    outcome = SweepOutcome(tuple(results), 70.0, {}, "cli", chance=judging.model.chance)
    document = {
        "model": lm.name,
        "layer": args.layer,
        "method": args.method,
        "judge": judge_name,
        "judge_model": judging.model.name,
        "prompts": len(texts),
        "results": [steering_record(r, ci) for r, ci in zip(results, outcome.intervals(Bootstrap()))],
    }
    if args.json:
        print(json.dumps(document, indent=1))
        return 0
    for r, record in zip(results, document["results"]):
        lo, hi = record["trait_ci"] or (math.nan, math.nan)
        print(
            f"coef {r.coef:>10.4g}  trait {r.trait:6.2f} [{lo:6.2f}, {hi:6.2f}]  trait_logit {r.trait_logit:6.2f}  "
            f"coherence {r.coherence:6.1f}  {r.texts[0][:60]!r}"
        )
    return 0


def steering_record(result, intervals: dict) -> dict:
    """One coefficient of `steer --json`: scores, their intervals over prompts, the texts."""

    def number(x: float) -> float | None:  # JSON has no nan: an undefined score (every text empty) is null
        return None if math.isnan(x) else x

    return {
        "coef": result.coef,
        "trait": result.trait,
        "trait_ci": intervals["trait_ci"],
        "trait_logit": result.trait_logit,
        "coherence": number(result.coherence),
        "coherence_ci": intervals["coherence_ci"],
        "texts": list(result.texts),
    }


def cmd_models(args) -> int:
    from massive_checks.engine.synthetic import BUILDERS

    if args.load:
        for name in args.load:
            facts = models.load(name).describe()
            print(f"{name}: {facts['architecture']}, revision {facts['revision']}, {facts['dtype']} on {facts['device']}")
        return 0
    print("\n".join([*models.BUNDLED_GGUF, *BUILDERS]))
    print("\n".join(f"{name}  (random weights of a real shape, seed 0: for benchmarks only)" for name in models.random_names()))
    return 0


def cmd_check(args) -> int:
    """The suite without pytest: every spec on every model it applies to, reports written."""
    from pathlib import Path

    from massive_checks.base.constants import DEFAULTS_FILE
    from massive_checks.output.records import AS_EXPECTED
    from massive_checks.output.report import failure_text
    from massive_checks.language.loading import load_file
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
    print(f"{len(pairs) - false_claims}/{len(pairs)} as expected; reports in {suite.report_dir()}")
    return 1 if false_claims or suite.figure_errors else 0


def cmd_schema(args) -> int:
    from massive_checks.language.schema import json_schema

    print(json.dumps(json_schema(defaults=args.defaults), indent=1, sort_keys=True))
    return 0


COMMANDS = {
    "check": cmd_check,
    "schema": cmd_schema,
    "profile": cmd_profile,
    "heads": cmd_heads,
    "scan": cmd_scan,
    "diff": cmd_diff,
    "vectors": cmd_vectors,
    "steer": cmd_steer,
    "models": cmd_models,
}

if __name__ == "__main__":
    sys.exit(main())
