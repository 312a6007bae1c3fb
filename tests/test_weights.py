"""Weight interventions (`weight:PARAM@L[OUT,IN]`): the [OUT, IN] index means the math's entry on
every architecture (GPT-2's Conv1D and fused q/k/v included), the edit is undone exactly when the
pass ends (also on errors), and zeroing the planted model's super weight removes its massive
activation."""

from __future__ import annotations

import pytest
import torch

from conftest import SMALL_DATA
from massive_checks.engine import hooks, synthetic, weights
from massive_checks.engine.apply import ablate
from massive_checks.engine.edits import applied
from massive_checks.engine.synthetic import PLANT
from massive_checks.language import interventions
from massive_checks.measures import profile as P

ARCHITECTURES = [name for name in synthetic.BUILDERS if name.startswith("tiny-")]
MATRICES = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.gate", "mlp.down")


def _part_output(lm, param: str, layer: int, x: torch.Tensor) -> torch.Tensor:
    """PARAM's output features [N, OUT] for inputs x [N, IN], split from a fused q/k/v output the
    way the architecture's own attention splits it."""
    field, part = weights._FIELDS[param]
    module = lm.module(getattr(lm.adapter, field).format(L=layer))
    y = module(x)
    if part is None or lm.adapter.qkv == "separate":
        return y
    if lm.adapter.qkv == "stacked":  # GPT-2: q, k, v = c_attn(x).split(D)
        return y.split(y.shape[-1] // 3, dim=-1)[part]
    hd = lm.head_dim  # GPT-NeoX: view(..., H, 3 * hd), then q, k, v = [..., :hd], [hd:2hd], [2hd:]
    return y.view(*y.shape[:-1], -1, 3 * hd)[..., part * hd : (part + 1) * hd].flatten(-2)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_out_in_index_is_the_maths_entry_on_every_architecture(load_model, name):
    """Setting W[o, i] to w changes output feature o by (w - W[o, i]) * x_i and no other feature."""
    lm = load_model(name)
    checked = 0
    for param in MATRICES:
        field, _ = weights._FIELDS[param]
        if not getattr(lm.adapter, field):
            with pytest.raises(ValueError, match="has no such parameter"):
                weights.located(lm, param, 1, (0, 0))
            continue
        x = torch.randn(3, _in_width(lm, param))
        with torch.no_grad():
            before = _part_output(lm, param, 1, x)
            o, i = before.shape[-1] - 2, x.shape[-1] - 3
            request = interventions.parse(f"weight:{param}@1[{o},{i}]=value:5")
            edit = interventions.resolve([request], lm.n_layers, lm.n_heads)
            weight, where = weights.located(lm, param, 1, (o, i))
            old = float(weight[where])
            with weights.edited(lm, edit):
                after = _part_output(lm, param, 1, x)
        change = after - before
        expected = torch.zeros_like(change)
        expected[:, o] = (5.0 - old) * x[:, i]
        torch.testing.assert_close(change, expected, atol=1e-4, rtol=1e-4)
        checked += 1
    assert checked >= 6


def _in_width(lm, param: str) -> int:
    field, _ = weights._FIELDS[param]
    weight = lm.module(getattr(lm.adapter, field).format(L=1)).weight
    return weight.shape[0] if lm.adapter.conv1d else weight.shape[1]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-neox", "tiny-gemma3", "tiny-llama"])
def test_norm_and_whole_row_edits_address_the_right_entries(load_model, name):
    lm = load_model(name)
    weight, where = weights.located(lm, "norm.mlp", 0, (7,))
    assert weight.dim() == 1 and where == (7,)
    weight, where = weights.located(lm, "mlp.down", 0, (interventions.EVERY, 3))
    rows = weight.T if lm.adapter.conv1d else weight  # [out, in]
    assert weight[where].shape == (rows.shape[0],)
    with pytest.raises(ValueError, match="IN 100000 is out of range"):
        weights.located(lm, "mlp.down", 0, (0, 100000))
    post = "norm.mlp_post"
    if lm.adapter.norm_mlp_post is None:
        with pytest.raises(ValueError, match="has no such parameter"):
            weights.located(lm, post, 0, (0,))
    else:
        assert weights.located(lm, post, 0, (0,))[0].dim() == 1


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-neox", "tiny-llama"])
def test_weights_are_restored_bit_identically_also_on_errors(load_model, name):
    lm = load_model(name)
    ids = torch.randint(0, 250, (2, 12))
    with torch.no_grad():
        reference = lm.model(input_ids=ids).logits.clone()
    texts = ["weight:attn.q@0[*,3]=value:7", "weight:mlp.down@1[5,*]", "weight:norm.attn@all[2]=value:-3"]
    edit = interventions.resolve([interventions.parse(t) for t in texts], lm.n_layers, lm.n_heads)
    with torch.no_grad(), applied(lm, edit):
        edited_logits = lm.model(input_ids=ids).logits
    assert not torch.equal(edited_logits, reference)  # the edit was in force
    with pytest.raises(RuntimeError, match="boom"), applied(lm, edit):
        raise RuntimeError("boom")
    with torch.no_grad():
        assert torch.equal(lm.model(input_ids=ids).logits, reference)


def test_zeroing_the_planted_super_weight_removes_the_massive_activation(session_for):
    """The plant writes the massive activation through down_proj[dim, neuron]: that one scalar."""
    session = session_for("planted-llama")
    layer, dim, neuron = PLANT["layer"], PLANT["dim"], PLANT["neuron"]
    baseline = P.top_cells(session.view(SMALL_DATA), layer, 1)[0]
    assert (baseline.dim, baseline.value > 500) == (dim, True)
    for text, removed in (
        (f"weight:mlp.down@{layer}[{dim},{neuron}]", True),
        (f"weight:mlp.down@{layer}[{dim + 1},{neuron}]", False),
    ):
        view = session.view(SMALL_DATA, session.resolve(SMALL_DATA, [interventions.parse(text)]))
        top = P.top_cells(view, layer, 1)[0]
        assert (top.value < 50) == removed, (text, top)
    assert hooks.hook_count(session.lm.model) == 0


def test_ablate_applies_weight_edits_only_inside_its_block(load_model):
    lm = load_model("planted-llama")
    weight = lm.module(lm.adapter.down.format(L=PLANT["layer"])).weight
    before = weight.clone()
    with ablate(lm, f"weight:mlp.down@{PLANT['layer']}[{PLANT['dim']},{PLANT['neuron']}]"):
        assert float(weight.detach()[PLANT["dim"], PLANT["neuron"]]) == 0.0
    assert torch.equal(weight, before)
