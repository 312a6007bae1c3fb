"""Capture passes against a plain forward (default: SmolLM2-135M, float32, CPU, one thread)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ratios import interleaved_ratio, record
from torch.utils._python_dispatch import TorchDispatchMode

from massive_checks.engine import hooks, selection
from massive_checks.engine.needs import Needs
from massive_checks.engine.session import ModelSession
from massive_checks.language.data import DataConfig


def _on_device(lm, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's ids and mask on the model's device (moved once, outside any timing)."""
    return batch.input_ids.to(lm.device), batch.attention_mask.to(lm.device)


def _plain(lm, batch, head: bool = True, eager: bool = False):
    """A plain forward (SDPA attention, as transformers loads by default; eager: the implementation
    that returns attention weights), with or without the LM head."""
    network = lm.model if head else lm.model.base_model
    ids, mask = _on_device(lm, batch)

    def forward():
        with torch.no_grad(), lm.attention(weights_needed=eager):
            network(input_ids=ids, attention_mask=mask, use_cache=False)

    return forward


def _pass(lm, data, needs=None, batch_size=None):
    session = ModelSession(lm, batch_size=batch_size or data.samples)
    session.batch(data)

    def run():
        session._passes.clear()  # a fresh pass each call, on the cached tokenization
        session.run(data, needs=needs)

    return run, session.batch(data)


def test_profile_pass_vs_plain_forward(benchmark, lm, long_texts):
    data = DataConfig(dataset=long_texts, samples=8, seq_len=128)
    profile, batch = _pass(lm, data)
    ratio, *_ = interleaved_ratio(profile, _plain(lm, batch))
    record("profile pass vs plain full forward, 8x128", ratio, "target <= 0.9x")
    floor, *_ = interleaved_ratio(profile, _plain(lm, batch, head=False))
    record("profile pass vs forward without the LM head (floor), 8x128", floor)
    benchmark.pedantic(profile, rounds=3, iterations=1)


def test_head_score_pass_vs_plain_eager_forward(benchmark, lm, long_texts):
    data = DataConfig(dataset=long_texts, samples=8, seq_len=512)
    needs = Needs(sites={hooks.site(L, "attn.probs") for L in range(lm.n_layers)})
    heads, batch = _pass(lm, data, needs)
    ratio, *_ = interleaved_ratio(heads, _plain(lm, batch, eager=True), rounds=3)
    record("head-score pass vs plain eager forward, 8x512", ratio, "target <= 1.0x")
    benchmark.pedantic(heads, rounds=2, iterations=1)


def test_early_stop_capture_vs_plain_forward(benchmark, lm, long_texts):
    """capture_stats(stop_early=True) at the first quarter of the blocks: no later blocks, no logits."""
    from massive_checks.engine.apply import capture_stats

    data = DataConfig(dataset=long_texts, samples=8, seq_len=128)
    batch = ModelSession(lm, batch_size=8).batch(data)
    ids, mask = _on_device(lm, batch)
    last = lm.n_layers // 4 - 1
    sites = [hooks.site(L, "out") for L in range(last + 1)]

    def capture():
        with torch.no_grad(), capture_stats(lm, sites, median_sites=set(sites), stop_early=True) as captured:
            captured.forward(lm.model, ids, mask, use_cache=False)

    ratio, *_ = interleaved_ratio(capture, _plain(lm, batch))
    record(
        f"early-stop capture of blocks 0-{last} vs plain full forward, 8x128",
        ratio,
        f"target <= {(last + 1) / lm.n_layers + 0.1:.2f}x",
    )
    benchmark.pedantic(capture, rounds=3, iterations=1)


class _LaunchingOps(TorchDispatchMode):
    """Counts the ops that reach the kernels (views and allocations excluded): on a GPU each is
    at least one launch, what bounds a small model's forward there."""

    FREE = {"empty.memory_format", "empty_strided.default", "_local_scalar_dense.default", "is_nonzero.default"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view and func.__name__ not in self.FREE
        return func(*args, **(kwargs or {}))


def _launching_ops(fn) -> int:
    fn()  # warm: tokenization, the first pass's lazy set-up
    with _LaunchingOps() as ops:
        fn()
    return ops.count


def test_launching_ops_profile_pass_vs_plain_forward(benchmark, lm, long_texts, monkeypatch):
    """Launch count, device-independent: counted on any device with the GPU's ways forced (held
    stacks, medians by sort, packed copies to the host), so a cpu run predicts the GPU's
    launch-bound overhead."""

    monkeypatch.setattr(selection, "GPU_WAYS", True)
    data = DataConfig(dataset=long_texts, samples=8, seq_len=128)
    profile, batch = _pass(lm, data)
    ops, floor = _launching_ops(profile), _launching_ops(_plain(lm, batch, head=False))
    record(f"launching ops, profile pass ({ops}) vs forward without the LM head ({floor}), 8x128", ops / floor, "target <= 1.05x")
    benchmark.pedantic(profile, rounds=1, iterations=1)


def test_host_time_profile_pass_vs_plain_forward(benchmark, lm, long_texts, monkeypatch):
    """The host's cpu time per pass (all threads), the GPU's ways forced: on a GPU it is the work
    that bounds a launch-bound pass (launches, hooks' Python, topk and sort set-up); on the cpu it
    is all the work, so there it says what the GPU's ways cost a cpu."""

    monkeypatch.setattr(selection, "GPU_WAYS", True)
    data = DataConfig(dataset=long_texts, samples=8, seq_len=128)
    profile, batch = _pass(lm, data)
    ratio, ours, plain = interleaved_ratio(profile, _plain(lm, batch), clock=time.process_time)
    record(f"host cpu time, profile pass ({ours * 1e3:.0f} ms) vs plain full forward ({plain * 1e3:.0f} ms), 8x128", ratio)
    benchmark.pedantic(profile, rounds=1, iterations=1)


@pytest.mark.parametrize("batch_size, seq_len", [(1, 128), (1, 512), (1, 2048), (8, 128), (32, 128)])
def test_profile_overhead_scaling(benchmark, lm, long_texts, batch_size, seq_len):
    data = DataConfig(dataset=long_texts, samples=batch_size, seq_len=seq_len)
    profile, batch = _pass(lm, data)
    ratio, *_ = interleaved_ratio(profile, _plain(lm, batch, head=False), rounds=3)
    record(f"profile pass vs forward without the LM head, {batch_size}x{seq_len}", ratio)
    benchmark.pedantic(profile, rounds=1, iterations=1)


MEMORY_SCRIPT = """
import gc, json, sys, torch
from pathlib import Path
from massive_checks.engine import models
from massive_checks.language.data import DataConfig
from massive_checks.engine.session import ModelSession
what, setup = sys.argv[1], json.loads(sys.argv[2])
torch.set_num_threads(1)
lm = models.load(**setup)
data = DataConfig(samples=8, seq_len=128)
session = ModelSession(lm, batch_size=8)
batch = session.batch(data)
cuda = lm.device.startswith("cuda")
def status(key):  # kB
    return int(next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key)).split()[1])
gc.collect()
if cuda:  # the peak of the caching allocator's allocations
    torch.cuda.synchronize(), torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() // 1024
else:
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = status("VmRSS:")
with torch.no_grad():
    if what == "plain":
        with lm.attention(weights_needed=False):
            lm.model(input_ids=batch.input_ids.to(lm.device), attention_mask=batch.attention_mask.to(lm.device),
                     use_cache=False)
    else:
        from massive_checks.engine import capture
        selection.GPU_WAYS = what == "profile-gpu-ways"  # forced on the cpu: the GPU's held stacks, sorts, copies
        session.run(data)
peak = torch.cuda.max_memory_allocated() // 1024 if cuda else status("VmHWM:")
print(json.dumps({"extra_kib": peak - before}))
"""


def _extra_memory(what: str, setup: dict) -> int:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, what, json.dumps(setup)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_kib"]


def test_profile_pass_extra_memory_vs_plain_forward(benchmark, setup):
    """Peak memory growth of one pass over the loaded model, each in its own process: on the cpu the
    peak RSS (Linux: reset through /proc/self/clear_refs after loading), on CUDA the allocator's
    peak allocation."""
    if not setup["device"].startswith("cuda") and not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak RSS reset needs Linux /proc")
    plain, profile = _extra_memory("plain", setup), _extra_memory("profile", setup)
    record(
        f"profile pass extra memory vs plain forward, 8x128 ({profile // 1024} vs {plain // 1024} MiB)",
        profile / max(plain, 1),
        "target <= 1.0x",
    )
    if not setup["device"].startswith("cuda"):  # what the GPU's ways (held stacks, sorted medians) add
        forced = _extra_memory("profile-gpu-ways", setup)
        record(f"the same with the GPU's ways forced ({forced // 1024} MiB)", forced / max(plain, 1))
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


def test_nnsight_save_all_block_outputs_vs_plain_forward(benchmark, lm, long_texts):
    """The peer: nnsight saving every block output (the issue's 1.03x), beside our profile pass."""
    nnsight = pytest.importorskip("nnsight")
    data = DataConfig(dataset=long_texts, samples=8, seq_len=128)
    profile, batch = _pass(lm, data)
    wrapped = nnsight.NNsight(lm.model)
    blocks = lm.adapter.blocks.split(".")
    ids, mask = _on_device(lm, batch)

    def save_all():
        with (
            torch.no_grad(),
            lm.attention(weights_needed=False),
            wrapped.trace(input_ids=ids, attention_mask=mask, use_cache=False),
        ):
            layers = wrapped
            for part in blocks:
                layers = getattr(layers, part)
            [layer.output.save() for layer in layers]

    ratio, *_ = interleaved_ratio(save_all, _plain(lm, batch))
    record("nnsight save-all block outputs vs plain full forward, 8x128", ratio)
    ours, *_ = interleaved_ratio(profile, save_all)
    record("profile pass vs nnsight save-all, 8x128", ours)
    benchmark.pedantic(save_all, rounds=3, iterations=1)
