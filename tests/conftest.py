"""Shared fixtures: models are loaded once per test session (they are read-only in tests)."""

from __future__ import annotations

import os

import pytest
import torch

from massive_checks.base.constants import SMOLLM2
from massive_checks.engine import gguf_cache, hooks, models
from massive_checks.engine.session import ModelSession
from massive_checks.language.data import DataConfig

pytest_plugins = ["pytester"]

# pytester points HOME at each test's own folder, so runs inside it would dequantize the bundled
# models again into ~/.cache there (1.3 GB for Gemma 3). Pin the cache to the real one first.
os.environ.setdefault("MASSIVE_CHECKS_CACHE", str(gguf_cache.cache_root().parent))

SMALL_DATA = DataConfig(samples=6, seq_len=40)  # tiny models: short, several padded rows


_LOADED: dict[str, models.LoadedModel] = {}


def _load(name: str) -> models.LoadedModel:
    if name not in _LOADED:
        _LOADED[name] = models.load(name)
    return _LOADED[name]


@pytest.fixture(scope="session", autouse=True)
def _import_model_code_once():
    """pytester's in-process runs restore sys.modules afterwards, which drops transformers
    modules first imported inside them and breaks its lazy imports. Import them all up front."""
    from massive_checks.engine import synthetic

    for name in synthetic.BUILDERS:
        _load(name)


@pytest.fixture(scope="session")
def load_model():
    """load_model(name) -> LoadedModel, cached for the session."""
    return _load


@pytest.fixture
def session_for(load_model):
    """session_for(name) -> a fresh ModelSession (its own pass cache) on a cached model; its
    steering judge model (by default SmolLM2, or Gemma 3 270M for SmolLM2) is cached too."""
    return lambda name, **kw: ModelSession(load_model(name), **{"judge_loader": load_model, **kw})


@pytest.fixture(scope="session")
def smollm2():
    return _load(SMOLLM2)


@pytest.fixture(autouse=True)
def no_hooks_leak(request):
    """After every test, no model loaded in this session has a hook left."""
    yield
    for lm in _LOADED.values():
        assert hooks.hook_count(lm.model) == 0, f"hooks left on {lm.name} after {request.node.name}"


def reference_block_outputs(lm: models.LoadedModel, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Block outputs the plain-transformers way: output_hidden_states, with the final norm
    swapped out so the last entry is the last block's raw output. Returns L tensors [B, T, D]."""
    base = lm.model.base_model
    norm_name = next(n for n in ("norm", "ln_f", "final_layer_norm", "final_layernorm") if hasattr(_decoder(base), n))
    decoder = _decoder(base)
    original = getattr(decoder, norm_name)
    setattr(decoder, norm_name, torch.nn.Identity())
    try:
        with torch.no_grad():
            out = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    finally:
        setattr(decoder, norm_name, original)
    return list(out.hidden_states[1:])


def _decoder(base):
    # OPT nests its layers in .decoder; image-text Gemma 3 in .language_model
    return getattr(base, "decoder", None) or getattr(base, "language_model", None) or base


def pytest_terminal_summary(terminalreporter):
    """The spec mutation, fuzz and fault tests' totals (each of their tests asserts on its own examples)."""
    import sys

    for name, counts in (("test_spec_mutations", "COUNTS"), ("test_fuzz", "COUNTS"), ("test_faults", "FAULTS")):
        module = sys.modules.get(name) or sys.modules.get(f"tests.{name}")
        if module is not None and any(getattr(module, counts).values()):
            terminalreporter.section(f"{name} counts")
            terminalreporter.line(str(dict(getattr(module, counts))))
