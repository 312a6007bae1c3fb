"""Every architecture adapter maps every canonical site on a tiny random model of its kind."""

from __future__ import annotations

import pytest
import torch

from conftest import SMALL_DATA
from massive_checks.base.errors import UnsupportedArchitecture
from massive_checks.engine import adapters, hooks, synthetic
from massive_checks.engine.needs import Needs

ARCHITECTURES = [name for name in synthetic.BUILDERS if name.startswith("tiny-")]
D, F, H = synthetic.TINY["width"], synthetic.TINY["ffn"], synthetic.TINY["heads"]
WIDTHS = {
    "out": D,
    "attn.out": D,
    "attn.o_in": D,
    "mlp.in": D,
    "mlp.up": F,
    "mlp.gate": F,
    "mlp.act": F,
    "mlp.down_in": F,
    "mlp.out": D,
}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_site_is_captured_with_its_width(session_for, name):
    session = session_for(name)
    lm = session.lm
    names = [n for n in WIDTHS if n != "mlp.gate" or lm.adapter.gate is not None]
    sites = [hooks.site(1, n) for n in names] + [hooks.site(1, "attn.probs")]
    result = session.run(SMALL_DATA, needs=Needs(set(sites)))
    for n in names:
        stats = result.stats[hooks.site(1, n)]
        assert stats.cell_max.shape[1] == WIDTHS[n], n
        assert float(stats.cell_max.max()) > 0, n
    key_attn = result.stats[hooks.site(1, "attn.probs")].attention_to_keys()
    assert key_attn.shape[:2] == (SMALL_DATA.samples, H)
    assert torch.all(key_attn[:, :, 0] > 0)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_mlp_output_site_is_what_the_residual_receives(session_for, name):
    """Zeroing the MLP output site removes the MLP from the residual: block output = input + attn."""
    lm = session_for(name).lm
    assert lm.head_dim * lm.n_heads == D
    down = hooks.resolve(lm, hooks.site(0, "mlp.out"))[0]
    weight_in = down.weight.shape[0] if lm.adapter.conv1d else down.weight.shape[1]
    assert weight_in == F  # Conv1D stores [in, out]; Linear [out, in]


def test_unsupported_architecture_lists_the_supported_ones():
    import transformers

    config = transformers.BloomConfig(n_layer=1, hidden_size=16, n_head=2, vocab_size=50)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedArchitecture, match="'bloom' is not supported; supported: gemma, gemma2"):
        adapters.adapter_for(model)
