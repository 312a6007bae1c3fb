"""The suite's options, defined once for both ways to run specs: the pytest plugin
(`pytest specs/ --model ...`) and `massive-checks check`. Light: no torch, no pytest."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable

from massive_checks.base.constants import BUNDLED_MODELS, CONFIDENCE, DEVICE_MAPS, DTYPE_NAMES, RESAMPLES

SUITE_OPTIONS = (  # their dests, the suite.Options fields they fill (suite.options_from)
    "model",
    "device",
    "dtype",
    "device_map",
    "dataset",
    "samples",
    "seq_len",
    "batch_size",
    "report_dir",
    "figure_workers",
    "trust_remote_code",
    "allow_pickle",
    "golden_dir",
    "update_golden",
    "confidence",
    "resamples",
    "judge_model",
)


def add_suite_options(add: Callable[..., Any]) -> None:
    """Register every suite option through `add` (argparse's add_argument, pytest's addoption)."""
    add(
        "--model",
        action="append",
        default=None,
        metavar="NAME",
        help=f"model to run specs on (repeatable): a hub id (NAME@REVISION for a branch, tag or commit), a "
        f"local directory or .gguf file, a bundled model ({', '.join(BUNDLED_MODELS)}), a synthetic "
        f"test model, or random:SHAPE (random weights of a real shape, for benchmarks only: "
        f"random:smollm2-135m, random:gemma3-270m, random:llama-3b, random:llama-8b). Default: the "
        f"bundled ones",
    )
    add("--device", default="cpu", help="torch device (default cpu)")
    add("--dtype", default="float32", choices=DTYPE_NAMES, help="model dtype")
    add(
        "--device-map",
        default=None,
        choices=DEVICE_MAPS,
        help="spread models larger than one device over all GPUs, with accelerate",
    )
    add("--dataset", default=None, help="text file (.txt one passage per line, .jsonl with 'text')")
    add("--samples", type=int, default=None, help="passages per spec (overrides specs)")
    add("--seq-len", type=int, default=None, help="tokens per passage (overrides specs)")
    add(
        "--batch-size",
        type=_count_or_auto(1, "a positive number"),
        default=None,
        metavar="N|auto",
        help="sequences per forward chunk (default auto: what fits in half the free memory, at most 8 on cpu and 64 on cuda)",
    )
    add("--report-dir", default="reports", help="where results.json and reports go")
    add(
        "--figure-workers",
        type=_count_or_auto(0, "a number (0: draw in this process)"),
        default=None,
        metavar="N|auto",
        help="processes drawing figures while passes run (auto: 0 on the cpu, up to 4 beside a GPU)",
    )
    add("--trust-remote-code", action="store_true", help="allow hub models' own code (off by default)")
    add("--allow-pickle", action="store_true", help="load pickle (*.bin) weights; safetensors only by default")
    add("--golden-dir", default="golden", help="where golden snapshots live (default golden/)")
    add(
        "--update-golden",
        nargs="?",
        const="all",
        default=None,
        choices=("all", "new"),
        help="rewrite missing and failing golden snapshots; =new: write missing ones only",
    )
    add(
        "--confidence",
        type=_share,
        default=CONFIDENCE,
        metavar="LEVEL",
        help=f"confidence level of every interval (default {CONFIDENCE}): a check holds when its whole "
        f"interval satisfies its bound",
    )
    add(
        "--resamples",
        type=_count_or_auto(100, "a whole number >= 100", auto=False),
        default=RESAMPLES,
        metavar="N",
        help=f"bootstrap resamples per set of sampling units (default {RESAMPLES})",
    )
    add(
        "--judge-model",
        default=None,
        metavar="NAME",
        help="model judging steered text's fluency (coherence), unless a steering configuration names "
        "its judge_model. Default: the other bundled model (a model never judges itself unless asked)",
    )


def _share(text: str) -> float:
    """--confidence: a level strictly between 0.5 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.5 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write a level between 0.5 and 1, e.g. 0.95")
    return value


def _count_or_auto(least: int, wanted: str, auto: bool = True) -> Callable[[str], int | None]:
    """An option's type: a whole number >= least, or (with auto) auto: None, chosen at run time."""

    def parse(text: str) -> int | None:
        if auto and text == "auto":
            return None
        if not text.isdigit() or int(text) < least:
            raise argparse.ArgumentTypeError(f"{text!r}: write {wanted}{' or auto' if auto else ''}")
        return int(text)

    return parse
