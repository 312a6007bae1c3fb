"""Speed targets as pytest-benchmark benchmarks (SmolLM2, batch 8 x 128 tokens, float32).

Target: capturing the layer-wise profile (top-k cells, per-dim peaks, means and the exact per-
sequence median at every block output) costs at most 1.5x a plain forward pass."""

from __future__ import annotations

import pytest
import torch

from massive_checks import hooks
from massive_checks.data import DataConfig
from massive_checks.session import ModelSession, Needs

DATA = DataConfig(samples=8, seq_len=128)
MEANS: dict[str, float] = {}


@pytest.fixture(scope="module")
def session(smollm2):
    return ModelSession(smollm2, batch_size=8)


def _plain(session):
    batch = session.batch(DATA)
    with torch.no_grad():
        session.lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)


def _profile_pass(session):
    session._passes.clear()
    session.run(DATA)


def _heads_pass(session):
    session._passes.clear()
    session.run(DATA, needs=Needs({hooks.site(L, "attn.probs") for L in range(session.lm.n_layers)}))


@pytest.mark.slow
@pytest.mark.parametrize("name, fn", [("plain", _plain), ("profile", _profile_pass), ("heads", _heads_pass)], ids=["plain", "profile", "heads"])
def test_forward_cost(benchmark, session, name, fn):
    benchmark.group = "smollm2 8x128 forward"
    benchmark.pedantic(fn, args=(session,), rounds=3, warmup_rounds=1)
    if benchmark.stats is not None:
        MEANS[name] = benchmark.stats.stats.mean


@pytest.mark.slow
def test_profile_capture_overhead_target():
    if set(MEANS) != {"plain", "profile", "heads"}:
        pytest.skip("benchmarks disabled (--benchmark-disable) or not run in this session")
    assert MEANS["profile"] <= 1.5 * MEANS["plain"], MEANS


@pytest.mark.slow
def test_bundled_model_loads_from_cache_under_5_seconds(benchmark, smollm2):
    """smollm2 was loaded (and its float32 cache written) by the fixture; reload from cache."""
    from massive_checks import models

    benchmark.group = "smollm2 load from cache"
    benchmark.pedantic(models.load, args=(models.BUNDLED,), rounds=2, warmup_rounds=0)
    if benchmark.stats is not None:
        assert benchmark.stats.stats.mean < 5.0
