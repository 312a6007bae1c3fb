"""`massive-checks` command line: quick profiles, head scores, checkpoint scans, steering vectors,
the suite without pytest."""

from __future__ import annotations

import argparse
import sys

from massive_checks.base.errors import MassiveChecksError
from massive_checks.base.options import add_options
from massive_checks.cli import activations, specs, steering
from massive_checks.cli.arguments import data_options, massive_options, vector_options
from massive_checks.engine import notices


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="massive-checks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    profile = commands.add_parser("profile", help="layer-wise top-1/2/3, median, ratio and massive activations")
    data_options(profile)
    profile.add_argument(
        "--ablate",
        action="append",
        default=[],
        metavar="X",
        help="intervention, repeatable: attn:all, mlp:2,3, heads:5.1,6.1, dims:447@all, ...",
    )
    massive_options(profile)
    heads = commands.add_parser("heads", help="per-head mean attention to position 0 (queries q >= 1)")
    data_options(heads)
    scan = commands.add_parser("scan", help="profile a checkpoint; write a report, a draft spec and its golden")
    data_options(scan)
    scan.add_argument("--out", default=None, help="output directory (default reports/scan-<model>)")
    diff = commands.add_parser("diff", help="compare two checkpoints' massive activations")
    data_options(diff)
    diff.add_argument("other", help="the second model")
    vectors = commands.add_parser(
        "vectors", help="steering vectors at one layer: mean_diff, probe, cleaned; geometry, norms, calibration"
    )
    vector_options(vectors, "block output (0-based)")
    vectors.add_argument("--window", required=True, help="tokens pooled per example: last:K, first:K (of the response) or all")
    massive_options(vectors)
    steer = commands.add_parser(
        "steer",
        help="steer with a vector at coefficients (coef 0, the unsteered model, first); judged trait, "
        "trait_logit and coherence with intervals over prompts, generated texts",
    )
    vector_options(steer, "block whose output is steered (and the vector's layer)")
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
    add_options(check.add_argument)
    schema = commands.add_parser("schema", help="print the JSON Schema of spec files (editors validate and complete with it)")
    schema.add_argument("--defaults", action="store_true", help="the schema of _defaults.yaml files instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    notice = lambda message: print(f"massive-checks: {message}", file=sys.stderr)  # noqa: E731
    notices.NOTICES.append(notice)
    try:
        return COMMANDS[args.command](args)
    except (MassiveChecksError, ValueError) as exc:
        print(f"massive-checks: error: {exc}", file=sys.stderr)
        return 2
    finally:
        notices.NOTICES.remove(notice)


COMMANDS = {
    "check": specs.cmd_check,
    "schema": specs.cmd_schema,
    "models": specs.cmd_models,
    "profile": activations.cmd_profile,
    "heads": activations.cmd_heads,
    "scan": activations.cmd_scan,
    "diff": activations.cmd_diff,
    "vectors": steering.cmd_vectors,
    "steer": steering.cmd_steer,
}
