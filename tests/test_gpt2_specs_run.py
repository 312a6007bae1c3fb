"""The GPT-2 specs cannot meet GPT-2's weights here (no hub), but they must run end to end on a
model of GPT-2 small's exact shape (12 x 12 heads, d 768, MLP 3072): every check evaluates,
every dim and head they name exists. Whether they pass is for the real weights to say."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from massive_checks.engine import adapters, models, synthetic
from massive_checks.engine.session import ModelSession
from massive_checks.language import load_file
from massive_checks.language.data import DataConfig
from massive_checks.pipeline.evaluate import Evaluator, plan

SPECS = [spec for path in sorted(Path(__file__).parent.parent.glob("specs/gpt2/*.yaml")) for spec in load_file(path)]


@pytest.fixture(scope="module")
def gpt2_shaped():
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=synthetic.VOCAB, bos_token_id=synthetic.BOS, eos_token_id=synthetic.EOS)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    lm = models.LoadedModel(
        "gpt2-shaped-random",
        model,
        synthetic.byte_tokenizer(add_bos=False),
        adapters.adapter_for(model),
        "random",
        torch.float32,
        "cpu",
    )
    session = ModelSession(lm)
    for spec in SPECS:
        plan(spec, session, BUILTIN_DATA)
    return session


# The specs read WikiText-2 from the hub, which is not reachable here: they run on the built-in text.
BUILTIN_DATA = DataConfig()


def test_the_gpt2_specs_read_the_seeds_data():
    assert {spec.data.dataset for spec in SPECS} == {"hf:wikitext/wikitext-2-raw-v1:test"}


def test_there_are_gpt2_specs_for_claims_c1_to_c13():
    ids = " ".join(spec.id for spec in SPECS)
    for claim in ("c1", "c2", "c3", "c4", "c5", "c6", "c7", "c7-bad", "c8", "c9", "c10", "c12", "c13"):
        assert f"gpt2-{claim}-" in ids, claim
    assert all(spec.models == ("gpt2",) for spec in SPECS)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_gpt2_spec_evaluates_on_a_gpt2_shaped_model(gpt2_shaped, spec):
    outcome = Evaluator(spec, gpt2_shaped, BUILTIN_DATA).evaluate()
    assert len(outcome.checks) == len(spec.checks)
    assert all(check.rows for check in outcome.checks)
