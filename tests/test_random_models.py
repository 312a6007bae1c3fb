"""Random-initialised models of real shapes for benchmarks (issue 29, part 1): `random:NAME` has
the bundled model's exact configuration (or the named Llama shape) and tokenizer, seed-0 weights,
no download; unknown shapes are a clear error; `massive-checks models` lists them."""

from __future__ import annotations

import pytest
import torch

from massive_checks import cli
from massive_checks.engine import models
from massive_checks.errors import ModelUnavailable

pytestmark = pytest.mark.slow  # reads the bundled models' cached configurations


def test_a_random_model_has_the_bundled_configuration_and_other_weights(smollm2):
    random = models.load("random:smollm2-135m")
    real, fake = smollm2.model.config.to_dict(), random.model.config.to_dict()
    shape = (
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
    assert {k: fake[k] for k in shape} == {k: real[k] for k in shape}
    assert random.tokenizer.get_vocab() == smollm2.tokenizer.get_vocab()
    assert random.revision == "random-seed0-smollm2-135m"
    weight = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(random.model.state_dict()[weight], smollm2.model.state_dict()[weight])
    again = models.load("random:smollm2-135m")  # seed 0: the same weights every time
    assert torch.equal(again.model.state_dict()[weight], random.model.state_dict()[weight])


def test_the_llama_shapes_and_unknown_ones():
    assert models.RANDOM_SHAPES["llama-3b"][1]["hidden_size"] == 3072
    assert models.RANDOM_SHAPES["llama-8b"][1]["intermediate_size"] == 14336
    with pytest.raises(ModelUnavailable, match="no such random shape; known: random:smollm2-135m"):
        models.load("random:llama-70b")


def test_the_models_command_lists_the_random_shapes(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in models.random_names()) and "for benchmarks only" in out
