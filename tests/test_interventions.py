"""Each intervention changes exactly what it should, hand-computed on tiny models."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SMALL_DATA
from massive_checks.engine import hooks, models, synthetic
from massive_checks.engine.apply import intervene
from massive_checks.engine.batches import tokenize
from massive_checks.language import interventions, load_file
from massive_checks.language.data import DataConfig
from massive_checks.pipeline.evaluate import Evaluator


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def two_layer(request):
    """A 2-layer tiny model: GPT-2 (Conv1D, weight [in, out]) and Llama (Linear, [out, in])."""
    original = synthetic.TINY["layers"]
    synthetic.TINY["layers"] = 2
    try:
        lm = models.load(request.param)
    finally:
        synthetic.TINY["layers"] = original
    batch = tokenize(lm.tokenizer, DataConfig(samples=3, seq_len=16))
    return lm, batch


@contextmanager
def raw(lm, *site_names):
    """Full tensors at sites, the plain way (test-only: the library never keeps them)."""
    seen = {}
    handles = []
    for name in site_names:
        module, which = hooks.resolve(lm, name)
        if which == "in":
            handles.append(module.register_forward_pre_hook(lambda m, a, n=name: seen.__setitem__(n, a[0].detach().clone())))
        else:
            handles.append(
                module.register_forward_hook(
                    lambda m, a, o, n=name, w=which: seen.__setitem__(
                        n, (o[1] if w == "out1" else o[0] if isinstance(o, tuple) else o).detach().clone()
                    )
                )
            )
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def forward(lm, batch, intervention=(), means=None, sites=()):
    with torch.no_grad(), intervene(lm, intervention, means) as attached, raw(lm, *sites) as seen:
        attached.forward(lm.model, batch.input_ids, batch.attention_mask)
    return seen


def resolve(lm, *texts):
    return interventions.resolve([interventions.parse(t) for t in texts], lm.n_layers, lm.n_heads)


def head_ablation_error(lm, batch, layer=1, head=2) -> float:
    """max |observed - hand-computed| attention output with one head zeroed, where the hand
    computation removes x_head @ W_o[head rows] (Conv1D: W[in, out]; Linear: W[out, in])."""
    o_in, attn_out = hooks.site(layer, "attn.o_in"), hooks.site(layer, "attn.out")
    base = forward(lm, batch, sites=[o_in, attn_out])
    ablated = forward(lm, batch, resolve(lm, f"heads:{layer}.{head}"), sites=[attn_out])
    cols = slice(head * lm.head_dim, (head + 1) * lm.head_dim)
    o_proj = hooks.resolve(lm, o_in)[0]
    weight = o_proj.weight.detach()
    w_head = weight[cols, :] if lm.adapter.conv1d else weight[:, cols].T  # [hd, D]
    expected = base[attn_out] - base[o_in][..., cols] @ w_head
    return float((ablated[attn_out] - expected).abs().max())


def test_zeroed_head_contribution_is_gone_and_other_heads_untouched(two_layer):
    lm, batch = two_layer
    assert head_ablation_error(lm, batch) < 1e-5
    o_in = hooks.site(1, "attn.o_in")
    base = forward(lm, batch, sites=[o_in])[o_in]
    ablated = forward(lm, batch, resolve(lm, "heads:1.2"), sites=[o_in])[o_in]
    cols = torch.zeros(lm.width, dtype=torch.bool)
    cols[2 * lm.head_dim : 3 * lm.head_dim] = True
    assert torch.all(ablated[..., cols] == 0)
    torch.testing.assert_close(ablated[..., ~cols], base[..., ~cols])  # other heads untouched


def test_the_seed_slicing_mistake_is_caught(two_layer, monkeypatch):
    """Seed 001 zeroed 64-wide slices of the attention output *after* the output projection.
    Redirected to that tensor, head ablation no longer matches the hand computation."""
    lm, batch = two_layer
    monkeypatch.setitem(interventions.TARGET_SITE, "heads", "attn.out")
    assert head_ablation_error(lm, batch) > 1e-3


def test_attention_and_mlp_outputs_are_removed_from_the_residual(two_layer):
    lm, batch = two_layer
    out0, attn0, mlp0 = hooks.site(0, "out"), hooks.site(0, "attn.out"), hooks.site(0, "mlp.out")
    base = forward(lm, batch, sites=[out0, attn0, mlp0])
    no_mlp = forward(lm, batch, resolve(lm, "mlp:0"), sites=[out0, attn0])
    torch.testing.assert_close(no_mlp[out0], base[out0] - base[mlp0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(no_mlp[attn0], base[attn0])  # attention of the same block untouched
    no_attn = forward(lm, batch, resolve(lm, "attn:0"), sites=[attn0])
    assert torch.all(no_attn[attn0] == 0)


def test_dims_zero_value_and_mean_only_touch_the_selected_cells(two_layer):
    lm, batch = two_layer
    out1 = hooks.site(1, "out")
    base = forward(lm, batch, sites=[out1])[out1]
    for text, fill in [("dims:3,7@1#0", 0.0), ("dims:3,7@1#0=value:42", 42.0)]:
        edited = forward(lm, batch, resolve(lm, text), sites=[out1])[out1]
        assert torch.all(edited[:, 0, [3, 7]] == fill)
        changed = edited != base
        changed[:, 0, [3, 7]] = False
        assert not changed.any()
    mean = {out1: base.mean(dim=0)}  # [T, D] position-wise mean over sequences
    edited = forward(lm, batch, resolve(lm, "dims:3@1#0,1=mean"), mean, sites=[out1])[out1]
    torch.testing.assert_close(edited[:, :2, 3], mean[out1][:2, 3].expand(3, 2))


def test_knocked_out_neurons_are_zero_at_the_down_projection_input(two_layer):
    lm, batch = two_layer
    down_in, mlp_out = hooks.site(0, "mlp.down_in"), hooks.site(0, "mlp.out")
    base = forward(lm, batch, sites=[down_in, mlp_out])
    edited = forward(lm, batch, resolve(lm, "neurons:5,9@0"), sites=[down_in, mlp_out])
    assert torch.all(edited[down_in][..., [5, 9]] == 0)
    down = hooks.resolve(lm, mlp_out)[0]
    weight = down.weight.detach()
    w = weight[[5, 9], :] if lm.adapter.conv1d else weight[:, [5, 9]].T  # [2, D]
    torch.testing.assert_close(edited[mlp_out], base[mlp_out] - base[down_in][..., [5, 9]] @ w, rtol=1e-5, atol=1e-5)


def test_hooks_are_removed_when_the_body_raises(two_layer):
    lm, _ = two_layer
    with pytest.raises(KeyError):
        with intervene(lm, resolve(lm, "heads:all", "mlp:all", "dims:1@all")):
            assert hooks.hook_count(lm.model) > 0
            raise KeyError("inside")
    assert hooks.hook_count(lm.model) == 0


def test_mean_ablation_without_means_is_an_error(two_layer):
    lm, _ = two_layer
    with pytest.raises(ValueError, match="needs the baseline mean"):
        with intervene(lm, resolve(lm, "mlp:0=mean")):
            pass
    assert hooks.hook_count(lm.model) == 0


def test_ablate_fixture_applies_and_removes(ablate, load_model):
    lm = load_model("planted-llama")
    batch = tokenize(lm.tokenizer, SMALL_DATA)
    site = hooks.site(synthetic.PLANT["layer"], "out")
    with ablate(lm, f"mlp:{synthetic.PLANT['layer']}=mean", data=SMALL_DATA) as intervention:
        seen = forward(lm, batch, sites=[site])
    assert intervention[0].mode == "mean" and hooks.hook_count(lm.model) == 0
    assert float(seen[site][:, 0, synthetic.PLANT["dim"]].abs().max()) > 100  # mean keeps the plant (it's in the mean)


ARCHITECTURES = [name for name in synthetic.BUILDERS if name.startswith("tiny-")]
CONSISTENCY = "specs/any/consistency.yaml"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_head_ablated_equals_attention_as_bias_on_every_architecture(session_for, name):
    (spec,) = load_file(CONSISTENCY)
    outcome = Evaluator(spec, session_for(name), SMALL_DATA).evaluate()
    assert outcome.passed, [r for c in outcome.checks for r in c.rows if not r.ok]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=6, unique=True), st.randoms())
def test_canonical_form_ignores_order_and_grouping(pairs, rnd):
    texts = [f"heads:{layer}.{head}" for layer, head in pairs]
    shuffled = texts[:]
    rnd.shuffle(shuffled)
    together = "heads:" + ",".join(f"{layer}.{head}" for layer, head in pairs)
    one = interventions.resolve([interventions.parse(t) for t in texts], 4, 4)
    assert one == interventions.resolve([interventions.parse(t) for t in shuffled], 4, 4)
    assert one == interventions.resolve([interventions.parse(together)], 4, 4)
    assert sum(len(a.units) for a in one) == len(pairs)


@pytest.mark.parametrize(
    "text, message",
    [
        ("attn", "cannot parse"),
        ("foo:1", "target 'foo'"),
        ("dims:3", "need @LAYERS"),
        ("mlp:1=bias", "does not apply"),
        ("dims:3@1=value:x", "not a number"),
        ("heads:1.9", "out of range"),
    ],
)
def test_bad_intervention_strings(text, message):
    with pytest.raises(ValueError, match=message):
        interventions.resolve([interventions.parse(text)], 4, 4)
