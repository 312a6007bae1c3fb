"""The suite's options, declared once: the pytest plugin's (`pytest specs/ --model ...`), the
flags of `massive-checks check` and of the CLI's model commands, and the defaults of
suite.Options all come from OPTIONS. Light: no torch, no pytest."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from massive_checks.base.constants import BUNDLED_MODELS, CONFIDENCE, DEVICE_MAPS, DTYPE_NAMES, RESAMPLES


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


@dataclass(frozen=True)
class Option:
    """One option, as argparse and pytest's addoption both take it: its flag and their keywords."""

    flag: str
    settings: dict[str, Any]

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def _option(flag: str, **settings: Any) -> Option:
    return Option(flag, settings)


OPTIONS = (  # the suite's options, in --help order: suite.Options has a field for each dest
    _option(
        "--model",
        action="append",
        default=None,
        metavar="NAME",
        help=f"model to run specs on (repeatable): a hub id (NAME@REVISION for a branch, tag or commit), a "
        f"local directory or .gguf file, a bundled model ({', '.join(BUNDLED_MODELS)}), a synthetic "
        f"test model, or random:SHAPE (random weights of a real shape, for benchmarks only: "
        f"random:smollm2-135m, random:gemma3-270m, random:llama-3b, random:llama-8b). Default: the "
        f"bundled ones",
    ),
    _option("--device", default="cpu", help="torch device (default cpu)"),
    _option("--dtype", default="float32", choices=DTYPE_NAMES, help="model dtype"),
    _option(
        "--device-map",
        default=None,
        choices=DEVICE_MAPS,
        help="spread models larger than one device over all GPUs, with accelerate",
    ),
    _option("--dataset", default=None, help="text file (.txt one passage per line, .jsonl with 'text')"),
    _option("--samples", type=int, default=None, help="passages per spec (overrides specs)"),
    _option("--seq-len", type=int, default=None, help="tokens per passage (overrides specs)"),
    _option(
        "--batch-size",
        type=_count_or_auto(1, "a positive number"),
        default=None,
        metavar="N|auto",
        help="sequences per forward chunk (default auto: what fits in half the free memory, at most 8 on cpu and 64 on cuda)",
    ),
    _option("--report-dir", default="reports", help="where results.json and reports go"),
    _option(
        "--figure-workers",
        type=_count_or_auto(0, "a number (0: draw in this process)"),
        default=None,
        metavar="N|auto",
        help="processes drawing figures while passes run (auto: 0 on the cpu, up to 4 beside a GPU)",
    ),
    _option("--trust-remote-code", action="store_true", help="allow hub models' own code (off by default)"),
    _option("--allow-pickle", action="store_true", help="load pickle (*.bin) weights; safetensors only by default"),
    _option("--golden-dir", default="golden", help="where golden snapshots live (default golden/)"),
    _option(
        "--update-golden",
        nargs="?",
        const="all",
        default=None,
        choices=("all", "new"),
        help="rewrite missing and failing golden snapshots; =new: write missing ones only",
    ),
    _option(
        "--confidence",
        type=_share,
        default=CONFIDENCE,
        metavar="LEVEL",
        help=f"confidence level of every interval (default {CONFIDENCE}): a check holds when its whole "
        f"interval satisfies its bound",
    ),
    _option(
        "--resamples",
        type=_count_or_auto(100, "a whole number >= 100", auto=False),
        default=RESAMPLES,
        metavar="N",
        help=f"bootstrap resamples per set of sampling units (default {RESAMPLES})",
    ),
    _option(
        "--judge-model",
        default=None,
        metavar="NAME",
        help="model judging steered text's fluency (coherence), unless a steering configuration names "
        "its judge_model. Default: the other bundled model (a model never judges itself unless asked)",
    ),
)
SUITE_OPTIONS = tuple(option.dest for option in OPTIONS)
MODEL_OPTIONS = ("--device", "--dtype", "--device-map")  # the CLI's commands that load a model take these too


def add_options(add: Callable[..., Any], flags: tuple[str, ...] | None = None) -> None:
    """Register the options (all, or those of `flags`) through `add` (argparse's add_argument,
    pytest's addoption)."""
    for option in OPTIONS:
        if flags is None or option.flag in flags:
            add(option.flag, **option.settings)


def default(dest: str) -> Any:
    """An option's default, by dest (suite.Options reads its defaults here)."""
    settings = next(option.settings for option in OPTIONS if option.dest == dest)
    return settings.get("default", False if settings.get("action") == "store_true" else None)
