"""Argument groups the commands share: the model (its options are base/options.py's), the massive
rule, the data, a steering vector."""

from __future__ import annotations

import argparse

from massive_checks.base.constants import BUNDLED_MODELS, MASSIVE_RULE
from massive_checks.base.options import MODEL_OPTIONS, add_options
from massive_checks.engine import models
from massive_checks.engine.session import ModelSession
from massive_checks.language.data import BUILTIN, DataConfig


def model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help=f"hub id (NAME@REVISION), local directory or .gguf file, a bundled model ({', '.join(BUNDLED_MODELS)}), or a synthetic model",
    )
    add_options(parser.add_argument, MODEL_OPTIONS)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def massive_options(parser) -> None:
    parser.add_argument("--min-value", type=float, default=MASSIVE_RULE[0], help="massive: |a| above this")
    parser.add_argument("--min-ratio", type=float, default=MASSIVE_RULE[1], help="massive: |a| / median at least this")


def data_options(parser: argparse.ArgumentParser) -> None:
    model_options(parser)
    parser.add_argument("--dataset", default=BUILTIN, help=".txt (one passage per line) or .jsonl ('text')")
    parser.add_argument("--samples", type=int, default=DataConfig().samples)
    parser.add_argument("--seq-len", type=int, default=DataConfig().seq_len)


def vector_options(parser: argparse.ArgumentParser, layer_help: str) -> None:
    model_options(parser)
    parser.add_argument("--pairs", required=True, help="contrast set: refusal, sentiment, or a JSONL file (text, label pos|neg)")
    parser.add_argument("--layer", type=int, required=True, help=layer_help)


def session_of(args) -> tuple[ModelSession, DataConfig]:
    lm = models.load(args.model, args.device, args.dtype, device_map=args.device_map)
    return ModelSession(lm), DataConfig(dataset=args.dataset, samples=args.samples, seq_len=args.seq_len)
