"""Capture statistics equal a plain-transformers computation; padding never counts."""

from __future__ import annotations

import pytest
import torch

from conftest import SMALL_DATA, reference_block_outputs
from massive_checks.engine import hooks, models, readings, selection, stats, synthetic, transfer
from massive_checks.engine.apply import capture_stats
from massive_checks.engine.session import ModelSession
from massive_checks.language.data import DataConfig
from massive_checks.measures import profile as P

ARCHITECTURES = [name for name in synthetic.BUILDERS if name.startswith("tiny-")]


def reference_profile(lm, batch, k=3):
    """Profile numbers from full hidden states, no hooks: per layer (top-k cells, mean median)."""
    mask = batch.attention_mask
    outs = reference_block_outputs(lm, batch.input_ids, mask)
    profile = []
    for act in outs:
        magnitude = act.abs() * mask[..., None]
        top = stats.top_cells(magnitude.amax(dim=0), k)
        medians = [act[b, : int(n)].abs().median() for b, n in enumerate(mask.sum(1))]
        profile.append((top, float(torch.stack(medians).mean())))
    return profile


def reference_paper_profile(lm, batch):
    """The paper's statistic from full hidden states: per sequence, top-3 of its flattened |h|
    over real tokens and its median, each averaged over sequences. Returns per layer (tops, median)."""
    lengths = batch.attention_mask.sum(1)
    result = []
    for act in reference_block_outputs(lm, batch.input_ids, batch.attention_mask):
        per_sequence = [act[b, : int(n)].abs().flatten() for b, n in enumerate(lengths)]
        tops = torch.stack([h.topk(3).values for h in per_sequence]).mean(0)
        result.append((tops.tolist(), float(torch.stack([h.median() for h in per_sequence]).mean())))
    return result


def assert_paper_profile_matches(session: ModelSession, data: DataConfig, rtol: float):
    view = session.view(data)
    for layer, (tops, median) in enumerate(reference_paper_profile(session.lm, session.batch(data))):
        observed = [P.top_value(view, layer, k).value for k in (1, 2, 3)]
        torch.testing.assert_close(torch.tensor(observed), torch.tensor(tops), rtol=rtol, atol=0)
        assert P.median(view, layer).value == pytest.approx(median, rel=rtol)
        assert P.ratio(view, layer).value == pytest.approx(tops[0] / median, rel=rtol)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_paper_statistic_equals_a_per_sequence_computation(session_for, name):
    assert_paper_profile_matches(session_for(name, batch_size=4), SMALL_DATA, rtol=1e-5)


@pytest.mark.slow
def test_smollm2_paper_statistic_differs_from_max_over_sequences_where_the_issue_said(smollm2):
    """Per-cell maxima put dim 507 of another sequence's token 1 in second place (~2.5e4); the
    paper's per-sequence top-2 is far smaller. Both are provided and named."""
    session = ModelSession(smollm2)
    data = DataConfig(samples=16, seq_len=128)
    assert_paper_profile_matches(session, data, rtol=1e-4)
    view = session.view(data)
    second_cell = P.top_cells(view, 11, 2)[1]
    assert second_cell.dim == 507 and second_cell.value > 2e4
    assert P.top_value(view, 11, 2, "max_over_sequences") == second_cell.value
    assert P.top_value(view, 11, 2).value < 0.2 * second_cell.value


def assert_profile_matches(session: ModelSession, data: DataConfig, rtol: float):
    view = session.view(data)
    expected = reference_profile(session.lm, session.batch(data))
    for layer, (top, median) in enumerate(expected):
        observed = P.top_cells(view, layer, 3)
        assert [(c.dim, c.token) for c in observed] == [(c.dim, c.token) for c in top], f"layer {layer}"
        torch.testing.assert_close(
            torch.tensor([c.value for c in observed]), torch.tensor([c.value for c in top]), rtol=rtol, atol=0
        )
        assert P.median(view, layer).value == pytest.approx(median, rel=rtol), f"median, layer {layer}"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_profile_equals_plain_transformers_on_every_architecture(session_for, name):
    assert_profile_matches(session_for(name, batch_size=4), SMALL_DATA, rtol=1e-5)


@pytest.mark.slow
def test_smollm2_profile_equals_plain_transformers(smollm2):
    assert_profile_matches(ModelSession(smollm2), DataConfig(samples=8, seq_len=64), rtol=1e-4)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_padding_is_excluded(session_for, name):
    """Each sequence's statistics are the same alone or in a padded batch with longer ones."""
    session = session_for(name, batch_size=8)
    batch = session.batch(SMALL_DATA)
    shortest = int(batch.lengths.argmin())
    stats = session.run(SMALL_DATA).stats[hooks.site(1, "out")]
    n = int(batch.lengths[shortest])
    with torch.no_grad():
        alone = reference_block_outputs(
            session.lm, batch.input_ids[shortest : shortest + 1, :n], batch.attention_mask[shortest : shortest + 1, :n]
        )[1][0]
    values, dims, tokens = stats.top()
    assert float(values[shortest]) == pytest.approx(float(alone.abs().max()), rel=1e-5)
    assert int(tokens[shortest]) < n
    assert float(stats.median()[shortest]) == pytest.approx(float(alone.abs().median()), rel=1e-5)


def test_batch_size_does_not_change_results(session_for):
    one = session_for("tiny-llama", batch_size=1).view(SMALL_DATA)
    all_at_once = session_for("tiny-llama", batch_size=6).view(SMALL_DATA)
    for layer in range(one.lm.n_layers):
        assert [c.value for c in P.top_cells(one, layer, 3)] == pytest.approx(
            [c.value for c in P.top_cells(all_at_once, layer, 3)], rel=1e-5
        )
        assert P.median(one, layer).value == pytest.approx(P.median(all_at_once, layer).value, rel=1e-5)


def test_one_forward_pass_per_data_and_intervention(session_for):
    session = session_for("tiny-llama")
    view = session.view(SMALL_DATA)
    for layer in range(session.lm.n_layers):
        P.top_cells(view, layer), P.median(view, layer).value, readings.massive_examples(view, layer)[0]
    P.profile_document(session.view(SMALL_DATA))
    assert session.forward_passes == 1
    P.profile_document(session.view(DataConfig(samples=3, seq_len=40)))  # other data: its own pass
    assert session.forward_passes == 2


def test_hooks_are_removed_when_the_body_raises(load_model):
    lm = load_model("tiny-gpt2")
    sites = [hooks.site(0, "out"), hooks.site(0, "attn.probs")]
    with pytest.raises(RuntimeError, match="boom"):
        with capture_stats(lm, sites):
            assert hooks.hook_count(lm.model) == 2
            raise RuntimeError("boom")
    assert hooks.hook_count(lm.model) == 0


def test_unknown_site_names_the_valid_ones(load_model):
    lm = load_model("tiny-gpt2")
    with pytest.raises(ValueError, match=r"valid: blocks.<L>"):
        hooks.resolve(lm, "layer.3.resid")
    with pytest.raises(ValueError, match="has 3 blocks"):
        hooks.resolve(lm, "blocks.7.out")
    with pytest.raises(ValueError, match="no gated MLP"):
        hooks.resolve(lm, "blocks.0.mlp.gate")


def test_two_specs_needing_one_configuration_share_its_forward_pass(session_for, tmp_path):
    from massive_checks.language import load_file
    from massive_checks.pipeline.evaluate import Evaluator, plan

    path = tmp_path / "two.yaml"
    path.write_text(
        "id: one\nclaim: c\ninterventions:\n  x: ['mlp:1']\nchecks:\n  - {measure: top1, config: x, at_least: 1.0e-6}\n"
        "---\nid: two\nclaim: c\ninterventions:\n  y: ['mlp:1']\nchecks:\n"
        "  - {measure: median, change: [baseline, y], layers: 2, at_least: -0.9}\n"
    )
    session = session_for("tiny-llama")
    specs = load_file(path)
    for spec in specs:
        plan(spec, session, SMALL_DATA)
    for spec in specs:
        assert Evaluator(spec, session, SMALL_DATA).evaluate().passed
    assert session.forward_passes == 2  # the baseline and mlp:1, once each


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-gemma3-mm"])
def test_a_pass_without_a_loss_computes_no_logits(session_for, name):
    from massive_checks.engine.needs import Needs

    session = session_for(name)
    calls = []
    handle = session.lm.model.get_output_embeddings().register_forward_hook(lambda *a: calls.append(1))
    try:
        session.run(SMALL_DATA)
        assert calls == [] and session.forward_passes == 1
        assert session.run(SMALL_DATA, needs=Needs(loss=True)).loss > 0
        assert calls  # the loss pass runs the LM head
    finally:
        handle.remove()


def _causal_probs(B: int, H: int, T: int, lengths: list[int], dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Random causal attention [B, H, T, T] (zero where k > q or k is padding), right-padded mask [B, T]."""
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    logits = torch.randn(B, H, T, T)
    allowed = torch.ones(T, T).tril().bool()[None, None] & mask.bool()[:, None, None, :]
    probs = logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return probs.to(dtype), mask


def _naive_key_attention(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The definition, loop by loop: mean over real queries q > k of the attention paid to k."""
    B, H, T, _ = probs.shape
    out = torch.zeros(B, H, T)
    for b in range(B):
        for k in range(T):
            queries = [q for q in range(k + 1, T) if mask[b, q]]
            if queries:
                out[b, :, k] = probs[b, :, queries, k].float().mean(dim=1)
    return out


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.bfloat16, 1e-6)])
def test_head_score_accumulation_equals_its_definition(dtype, tolerance):
    """Without [B, H, T, T] temporaries (a matrix product less the diagonal), the same numbers as
    the loop over queries q > k, padding excluded; in bfloat16 the sums are float32."""
    torch.manual_seed(0)
    probs, mask = _causal_probs(3, 4, 9, [9, 5, 2], dtype)
    from massive_checks.engine.capture import SiteStats

    stats_ = SiteStats()
    stats_.add_probs(probs, mask)
    got = stats_.finish().attention_to_keys()
    torch.testing.assert_close(got, _naive_key_attention(probs, mask), atol=tolerance, rtol=tolerance)
    assert got[1, :, 4:].abs().max() == 0  # no real query after the last real key of a 5-token row


def test_target_log_probs_equal_log_softmax_at_the_targets_and_consume_the_logits():
    """The in-place form gives torch.logsumexp's numbers exactly, log_softmax's to rounding, at
    logits spread wider than exp's range (a 262k vocabulary's tail), and overwrites its input."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 1000) * 30  # [B, T, V]
    targets = torch.randint(0, 1000, (3, 5))
    by_logsumexp = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(dim=-1)
    by_log_softmax = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    consumed = logits.clone()
    got = stats.target_log_probs(consumed, targets)
    assert torch.equal(got, by_logsumexp)
    torch.testing.assert_close(got, by_log_softmax, rtol=1e-6, atol=1e-5)
    assert not torch.equal(consumed, logits)  # the caller's logits are gone: no second [.., V] tensor was made
    assert got.max() <= 0 and got.min() < -50  # log-probabilities, some far in the tail


@pytest.mark.parametrize("by_select", [False, True], ids=["partition", "select"])
def test_lower_median_is_the_median_of_real_cells(by_select):
    """Both ways (the cpu's partition, the GPU's radix selection) give torch.median of each row's
    real cells: padding excluded, the lower of two middle values, ties kept."""
    from massive_checks.engine.selection import lower_median, sorted_median_at

    torch.manual_seed(0)
    for trial in range(100):
        B, T, F = 4, int(torch.randint(1, 9, (1,))), int(torch.randint(1, 7, (1,)))
        act = torch.randn(B, T, F)
        if trial % 3 == 0:
            act = act.round()  # ties
        mask = torch.ones(B, T, dtype=torch.long)
        for b in range(B):
            mask[b, int(torch.randint(1, T + 1, (1,))) :] = 0
        if trial % 10 == 0:
            mask[-1] = 0  # a row without real cells: NaN, as nanmedian gives
        padding = ~mask.bool()[..., None]
        magnitude = act.abs().masked_fill(padding, 0.0)
        expected = torch.stack([act[b, : int(mask[b].sum())].abs().flatten().median() for b in range(B)])
        got = lower_median(magnitude, padding, sorted_median_at(mask.sum(1) * F, T * F), by_select=by_select)
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True, msg=f"trial {trial}")


@pytest.mark.parametrize("way", ["select_at", "partition_at"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_selection_equals_the_sorted_rows_value(dtype, way):
    """select_at (the GPU's median, no sort) and partition_at (the cpu's) give the k-th value of
    each sorted row bit for bit, in every float dtype a model runs in: ties, zeros, inf and NaN
    (largest, as sort puts it), rows with their own k and rows sharing one."""
    select_at = getattr(selection, way)

    torch.manual_seed(0)
    for trial in range(60):
        rows, n = 6, int(torch.randint(1, 400, (1,)))
        values = torch.randn(rows, n).abs().mul(10.0 ** float(torch.randint(-3, 5, (1,)))).to(dtype)
        if trial % 3 == 0:
            values = values.round()  # ties and zeros
        if trial % 5 == 0:
            values[0, : n // 2] = 0.0
            values[1, -1] = float("inf")
            values[2, 0] = float("nan")
        k = torch.randint(0, n, (rows,))
        k[3] = 0
        k[4] = n - 1
        if trial % 4 == 0:
            k[:] = k[0]  # one k for every row
        want = values.sort(dim=1).values.gather(1, k[:, None]).squeeze(1)
        got = select_at(values, k)
        assert got.dtype == dtype
        assert torch.equal(want.nan_to_num(-1.0), got.nan_to_num(-1.0)), f"trial {trial}"


def test_median_selection_in_row_chunks_equals_the_cpu_way(monkeypatch):
    """Rows selected a few at a time (SELECT_CELLS), with padding, a row without real cells and a
    leading [G] dimension of sites: equal to the cpu's way, and to torch's nanmedian."""

    torch.manual_seed(1)
    G, B, T, F = 3, 4, 7, 5
    act = torch.randn(G, B, T, F)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] + [0] * 6, [0] * 7])
    padding = ~mask.bool()[..., None]
    magnitude = act.abs().masked_fill(padding, 0.0)
    at = selection.sorted_median_at(mask.sum(1) * F, T * F)
    want = selection.lower_median(magnitude, padding, at, by_select=False)
    nanmedian = magnitude.masked_fill(padding, float("nan")).flatten(-2).nanmedian(dim=-1).values
    assert torch.equal(want.nan_to_num(-1.0), nanmedian.nan_to_num(-1.0))
    monkeypatch.setattr(selection, "SELECT_CELLS", 2 * T * F)  # two rows per selection
    got = selection.lower_median(magnitude, padding, at, by_select=True)
    assert torch.equal(want.nan_to_num(-1.0), got.nan_to_num(-1.0)) and got[:, 3].isnan().all()


def test_medians_by_selection_at_sites_of_two_widths_in_one_chunk(monkeypatch):
    """The selection way's median positions depend on the width F: sites of different widths in one
    chunk (block outputs, MLP internals) each get their own, equal to the cpu's way."""
    import functools

    from massive_checks.engine import capture
    from massive_checks.engine.hooks import HookContext

    torch.manual_seed(0)
    acts = [torch.randn(3, 6, 4), torch.randn(3, 6, 10), torch.randn(3, 6, 4)]
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])

    def medians():
        sites, context = [capture.SiteStats(with_median=True) for _ in acts], HookContext(mask)
        for site, act in zip(sites, acts):
            site.add(act, context)
        return [site.finish().median() for site in sites]

    expected = medians()
    monkeypatch.setattr(capture, "lower_median", functools.partial(selection.lower_median, by_select=True))
    for got, want in zip(medians(), expected):
        assert torch.equal(got, want)


def test_packed_host_copies_equal_the_tensors_in_groups_per_dtype(monkeypatch):
    """to_host's GPU way (forced here): per dtype, groups of up to PACK_BYTES, one copy each; every
    tensor comes back equal, in its own shape, non-contiguous ones included."""

    monkeypatch.setattr(transfer, "PACK_BYTES", 64)  # bytes: 16 float32 values
    tensors = [
        torch.randn(2, 3),
        torch.arange(5),
        torch.randn(2, 2).t(),
        torch.randn(40),
        torch.tensor(7.0),
        torch.tensor([True, False]),
    ]
    # float32: 24 + 16 bytes fit one group; 160 bytes go alone; the scalar starts the next group
    assert transfer._pack_groups(tensors) == [[0, 2], [3], [4], [1], [5]]
    copies = transfer.to_host(tensors, packed=True)
    for tensor, copy in zip(tensors, copies):
        assert copy.shape == tensor.shape and copy.dtype == tensor.dtype and torch.equal(copy, tensor)


def test_finish_all_puts_each_packed_copy_back_in_its_place(monkeypatch):
    """Statistics of several sites (medians, slices, several chunks) are the same through the
    packed copies as through one copy per tensor."""
    from massive_checks.engine import capture
    from massive_checks.engine.hooks import HookContext

    def filled():
        torch.manual_seed(0)
        sites = {name: capture.SiteStats(with_median=True, slice_dims=(1,)) for name in ("a", "b")}
        for start in (0, 2):
            mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
            context = HookContext(mask, start)
            for site in sites.values():
                site.add(torch.randn(2, 4, 3), context)
        return sites

    plain = capture.finish_all(filled())
    packed_copy = transfer.to_host
    monkeypatch.setattr(capture, "to_host", lambda tensors: packed_copy(tensors, packed=True))
    monkeypatch.setattr(transfer, "PACK_BYTES", 40)
    packed = capture.finish_all(filled())
    for name in plain:
        for view in ("dim_max", "token_max", "median", "mean", "cells"):
            want, got = getattr(plain[name], view)(), getattr(packed[name], view)()
            for w, g in zip(want if isinstance(want, tuple) else [want], got if isinstance(got, tuple) else [got]):
                assert torch.equal(w, g), (name, view)
        assert torch.equal(plain[name].slice(1), packed[name].slice(1))


@pytest.mark.parametrize("where, overflow", [("real", True), ("padding", False)])
def test_overflow_is_seen_in_real_cells_only(where, overflow):
    """An inf in a real token's cell is an overflow (a numerics error later); one at padding is not."""
    from massive_checks.engine.capture import SiteStats
    from massive_checks.engine.hooks import HookContext

    act, mask = torch.randn(2, 5, 3), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    act[1, 1 if where == "real" else 3, 2] = float("inf")
    stats_ = SiteStats(with_median=True)
    stats_.add(act, HookContext(mask))
    assert stats_.finish().overflow is overflow


def test_overflow_is_flagged_on_its_own_site_when_all_sites_are_checked_at_once():
    """check_finite sums every site's parts of one shape in one op: the flag still lands on the
    site (and only the site) whose chunk held the inf, whichever chunk and shape it was."""
    from massive_checks.engine.capture import SiteStats, finish_all
    from massive_checks.engine.hooks import HookContext

    mask = torch.ones(2, 4, dtype=torch.long)
    sites = {name: SiteStats() for name in ("a", "b", "c", "narrow")}
    for chunk in range(2):
        for name, site in sites.items():
            act = torch.randn(2, 4, 2 if name == "narrow" else 3)
            if (name, chunk) in {("b", 1), ("narrow", 0)}:
                act[0, 2, 1] = float("-inf")
            site.add(act, HookContext(mask))
    finish_all(sites)
    assert {name: site.overflow for name, site in sites.items()} == {"a": False, "b": True, "c": False, "narrow": True}


@pytest.mark.parametrize("gpu_ways", [False, True], ids=["per-site", "held"])
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_stop_early_runs_no_block_after_the_deepest_site(load_model, monkeypatch, model, gpu_ways):
    """capture_stats(stop_early=True): a forward through `forward` runs blocks 0..deepest site's
    and returns None, with the same statistics as a full forward; a direct call still runs to the
    end; no hook is left behind. Also with the GPU's held statistics forced: they are computed
    after a stopped forward too, and a direct call (nothing runs at its end) computes them at once."""

    monkeypatch.setattr(selection, "GPU_WAYS", gpu_ways)
    lm = load_model(model)
    ids, mask = torch.tensor([[1, 5, 9, 12], [1, 7, 3, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    sites = [hooks.site(0, "out"), hooks.site(1, "mlp.out")]
    ran: list[int] = []
    counters = [
        lm.module(f"{lm.adapter.blocks}.{L}").register_forward_hook(lambda *_, L=L: ran.append(L)) for L in range(lm.n_layers)
    ]
    try:
        with torch.no_grad(), capture_stats(lm, sites, median_sites=set(sites)) as full:
            assert full.forward(lm.model, ids, mask).logits is not None
        ran.clear()
        with torch.no_grad(), capture_stats(lm, sites, median_sites=set(sites), stop_early=True) as early:
            assert early.forward(lm.model, ids, mask) is None
        assert ran == [0, 1] and lm.n_layers > 2
        ran.clear()
        with torch.no_grad(), capture_stats(lm, sites, stop_early=True) as direct:
            assert lm.model(input_ids=ids).logits.shape[:2] == ids.shape
        assert ran == list(range(lm.n_layers)) and direct[sites[0]].cell_max.shape == (4, lm.model.config.hidden_size)
    finally:
        for handle in counters:
            handle.remove()
    assert hooks.hook_count(lm.model) == 0
    for site in sites:
        torch.testing.assert_close(early[site].cell_max, full[site].cell_max, rtol=0, atol=0)
        torch.testing.assert_close(early[site].median(), full[site].median(), rtol=0, atol=0)


def _all_views(site):
    """Every finished view of a hidden-like site, as one flat list of tensors."""
    views = [site.dim_max(), site.token_max(), site.mean(), site.cell_max, site.count, *site.cells()]
    return views + ([site.median()] if site.with_median else []) + [site.slice(d) for d in site.slice_dims]


@pytest.mark.parametrize(
    "hold_bytes, dtype",
    [(2**30, "float32"), (40 * 2**10, "float32"), (2**30, "bfloat16"), (20 * 2**10, "bfloat16")],
    ids=["one-stack", "stacks-fill-mid-forward", "bfloat16-one-stack", "bfloat16-stacks-fill-mid-forward"],
)
def test_held_statistics_equal_the_per_site_ones(load_model, monkeypatch, hold_bytes, dtype):
    """The GPU's way, forced on the cpu: hidden-like tensors held per forward call and their
    statistics computed G sites at a time (stacks of several widths and median needs, 3 uneven
    chunks, an ablation edit before the captures) equal the per-site computation, bit for bit.
    With a HOLD_BYTES of two [2, 20, 128] float32 tensors (mlp.act; four of width 64; in bfloat16
    half the bytes) the stacks fill and are flushed in the middle of the forward. A bfloat16 model's
    stacks stay bfloat16 (no float32 copy); its statistics equal those of float32 copies."""
    from massive_checks.engine import capture
    from massive_checks.engine.needs import Needs
    from massive_checks.language.interventions import Ablation

    lm = load_model("tiny-llama") if dtype == "float32" else models.load("tiny-llama", dtype=dtype)
    data = DataConfig(samples=5, seq_len=20)
    sites = {hooks.site(L, name) for L in range(lm.n_layers) for name in ("out", "attn.o_in", "mlp.act", "mlp.out")}
    needs = Needs(
        sites=sites,
        medians={hooks.site(L, "out") for L in range(lm.n_layers)} | {"blocks.1.mlp.act"},
        slices={("blocks.0.out", 3), ("blocks.2.mlp.act", 7)},
    )
    intervention = (Ablation("dims", 1, units=(2,)),)

    def run():
        return ModelSession(lm, batch_size=2).run(data, intervention, needs).stats

    want = run()
    held, dtypes = [], set()
    monkeypatch.setattr(selection, "GPU_WAYS", True)
    monkeypatch.setattr(capture, "HOLD_BYTES", hold_bytes)
    monkeypatch.setattr(
        capture.HeldHidden,
        "flush",
        lambda self, key, flush=capture.HeldHidden.flush: (
            held.append(len(self.groups[key])) or dtypes.add(self.groups[key][0][1].dtype) or flush(self, key)
        ),
    )
    got = run()
    assert sum(held) == len(sites) * 3  # every site of every chunk went through a stack
    assert dtypes == {lm.dtype}  # held in the model's dtype
    stacks = 4  # per chunk: (width, median or not) of out, o_in and mlp.out, and of mlp.act
    assert max(held) > 1 and (len(held) == 3 * stacks) == (hold_bytes > 2**20)  # batched; full stacks flushed early
    for name in sorted(sites):
        for a, b in zip(_all_views(want[name]), _all_views(got[name]), strict=True):
            assert torch.equal(a, b), name


def test_a_held_tensor_written_after_its_hook_is_an_error(load_model, monkeypatch):
    """Held statistics read references, not copies: a model that writes a captured tensor in place
    after the hook (none of the supported architectures does) fails the pass, naming the cause,
    instead of computing statistics of the written values."""
    from massive_checks.engine import session as session_module
    from massive_checks.engine.needs import Needs

    lm = load_model("tiny-llama")
    monkeypatch.setattr(selection, "GPU_WAYS", True)
    pooled_pairs = session_module.pooled_pairs

    def with_a_writer(*args):  # pooling runs after the captures: a write after the hook
        pairs, pools = pooled_pairs(*args)
        return pairs + [("blocks.0.out", lambda x, context: x.mul_(2.0))], pools

    monkeypatch.setattr(session_module, "pooled_pairs", with_a_writer)
    needs = Needs(sites={"blocks.0.out", "blocks.1.out"}, medians={"blocks.0.out", "blocks.1.out"})
    with pytest.raises(RuntimeError, match="in place after its hook"):
        ModelSession(lm).run(DataConfig(samples=2, seq_len=12), (), needs)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_eager_attention_only_in_the_blocks_asked(name, load_model):
    """A pass that reads block 1's attention weights runs block 1 eager and every other block on
    SDPA (where the model has it): the same block outputs as all-SDPA (to float32 rounding), block
    1's weights as all-eager's, and every block's config restored afterwards."""
    lm = load_model(name)
    batch = tokenize_small(lm)
    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    modules = [lm.module(lm.adapter.attn.format(L=layer)) for layer in range(lm.n_layers)]
    configs = [m.config for m in modules]
    with torch.no_grad():
        with lm.attention():
            plain = lm.model.base_model(**kwargs).last_hidden_state
        with lm.attention({1}):
            inside = [m.config._attn_implementation for m in modules]
            mixed = lm.model.base_model(**kwargs, output_attentions=True)
        with lm.attention(set(range(lm.n_layers))):
            eager = lm.model.base_model(**kwargs, output_attentions=True)
    real = batch.attention_mask.bool()
    assert torch.allclose(mixed.last_hidden_state[real], plain[real], atol=1e-5)
    assert inside[1] == "eager"
    if name != "tiny-gemma2":  # soft-capping: Gemma 2 has no SDPA, every block stays eager
        assert inside[0] == inside[2] == "sdpa"
        assert len(mixed.attentions) == 1
    weights = mixed.attentions[0] if len(mixed.attentions) == 1 else mixed.attentions[1]
    assert torch.allclose(weights, eager.attentions[1], atol=1e-6)
    assert [m.config for m in modules] == configs and all(a is b for a, b in zip((m.config for m in modules), configs))


def tokenize_small(lm):
    from massive_checks.engine.batches import tokenize

    return tokenize(lm.tokenizer, SMALL_DATA)
