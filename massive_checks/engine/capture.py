"""Captures: pluggable accumulators fed by hook functions (hooks.attach), and `Needs`, what a
forward pass must capture. An accumulator keeps statistics, never whole activations.

Accumulators (each a class with `add(tensor, ctx)` and `finish()`):
  SiteStats   statistics of |a| at one site (hidden-like [B, T, F] or attention [B, H, T, T])
  Pooled      per example, the mean activation over a token window (steering vectors)
  UnitContributions  per sequence, MLP units' contributions to one output dim at its peak token"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from massive_checks.engine import hooks
from massive_checks.engine.hooks import HookContext, HookFn
from massive_checks.engine.models import free_bytes
from massive_checks.engine.needs import Needs
from massive_checks.engine.selection import gpu_ways, lower_median, sorted_median_at
from massive_checks.engine.transfer import to_host
from massive_checks.language.definitions import Window

SEQ_CELLS = 32  # per sequence, the largest cells kept: the massive rule is applied to these


@dataclass
class SiteStats:
    """Statistics of |a| at one site, accumulated over forward chunks; padding excluded.

    Hidden-like sites ([B, T, F]):
      cell_max [T, F]   max |a| over sequences at each (token, feature)
      total    [T, F]   sum of a (signed) over sequences; count [T] sequences per position
      seq_dim_max [S, F]  per sequence: max |a| of each feature over its real tokens
      seq_token_max [S, T] per sequence: max |a| over features at each real token (0 at padding)
      slices {f: [S, T]}  signed a of a few requested features at every token (0 at padding)
      seq_cells  [S, K]x3 per sequence: its K largest cells of the flattened |a| (values,
                 flat indices token * F + feature, signed values), largest first
      seq_median [S]    per sequence median of the flattened |a| of its real tokens (only where
                        requested)
      seq_token_norm [S, T] where asked: per token, the mean over its groups of norm_width features
                 of the groups' L2 norms (norm_width 0: the whole vector's norm; 0 at padding)
      seq_exceed [S, n, F] where asked: per sequence, threshold and feature, the real tokens with
                 |a| >= that threshold
    Attention probability sites ([B, H, T, T]):
      key_attn [S, H, T]  per sequence, mean attention paid to key k by queries q > k
    (S: every sequence of the dataset, in order.)
    """

    cell_max: torch.Tensor | None = None
    total: torch.Tensor | None = None
    count: torch.Tensor | None = None
    seq_dim_max: list = field(default_factory=list)
    seq_token_max: list = field(default_factory=list)
    seq_slices: list = field(default_factory=list)  # [(features tuple, [B, T, n] signed)]
    seq_cells: list = field(default_factory=list)  # [(values, flat indices, signed) each [B, K]]
    seq_median: list = field(default_factory=list)
    key_attn: list = field(default_factory=list)
    seq_token_norm: list = field(default_factory=list)
    seq_exceed: list = field(default_factory=list)
    overflow: bool = False  # an inf/nan was seen in a real cell (fp16 tops out at 65504); set by finish()
    width: int = 0  # F, to split flat cell indices into (token, feature)

    with_median: bool = False  # keep per-sequence medians (one batched call per chunk: lower_median)
    slice_dims: tuple = ()  # features kept at every token
    norm_width: int | None = None  # keep seq_token_norm, per group of this many features (0: all)
    thresholds: tuple = ()  # keep seq_exceed for these thresholds (> 0)
    pass_sites: int = 1  # sites captured in its pass: the most a held stack of its shape needs (HeldHidden)

    def add(self, tensor: torch.Tensor | None, context: HookContext) -> None:
        """The hook function: statistics of one chunk's tensor at this site; never edits it."""
        if tensor is None:
            raise RuntimeError("attention weights are None: load the model with eager attention")
        if tensor.dim() == 4:  # attention probabilities [B, H, T, T]
            self.add_probs(tensor, context.mask.to(tensor.device))
        else:
            self.add_hidden(tensor, context)

    def finish(self) -> SiteStats:
        """Move what the pass kept on its device to the cpu (finish_all does all sites at once)."""
        finish_all({"": self})
        return self

    def map_tensors(self, fn) -> None:
        """Replace every kept tensor t by fn(t), always in the same order (finish_all's copies)."""
        for name in ("cell_max", "total", "count"):
            if getattr(self, name) is not None:
                setattr(self, name, fn(getattr(self, name)))
        for name in ("seq_dim_max", "seq_token_max", "seq_median", "key_attn", "seq_token_norm", "seq_exceed"):
            setattr(self, name, [fn(part) for part in getattr(self, name)])
        self.seq_slices = [(dims, fn(part)) for dims, part in self.seq_slices]
        self.seq_cells = [tuple(fn(t) for t in cells) for cells in self.seq_cells]

    def add_hidden(self, act: torch.Tensor, context: HookContext) -> None:
        """One chunk's hidden-like tensor [B, T, F]. On a GPU it is held (a reference) and its
        statistics computed with other sites' at the end of the forward call: a small model's
        forward on a GPU is bound by kernel launches, and this runs at every block."""
        if gpu_ways(act) and context.deferrable and 2 * act.numel() * act.element_size() <= _hold_bytes_of(context, act):
            holder = context.shared(("held", act.device), lambda: _held(context))
            holder.hold(self, act)
        else:
            hidden_stats([self], act.detach()[None].float(), context)

    def keep(self, stats: dict) -> None:
        """Keep one chunk's statistics of this site (hidden_stats' per-site views)."""
        self.cell_max = stats["cell_max"] if self.cell_max is None else _merge_max(self.cell_max, stats["cell_max"])
        self.total = stats["total"] if self.total is None else _merge_sum(self.total, stats["total"])
        self.count = stats["count"] if self.count is None else _merge_sum(self.count, stats["count"])
        self.seq_dim_max.append(stats["dim_max"])
        self.seq_token_max.append(stats["token_max"])
        self.seq_cells.append(stats["cells"])
        if self.slice_dims:
            self.seq_slices.append((self.slice_dims, stats["signed"][..., list(self.slice_dims)].float()))
        if self.with_median:
            self.seq_median.append(stats["median"])
        signed = stats["signed"]  # [B, T, F], 0 at padding
        if self.norm_width is not None:
            groups = signed.float().unflatten(-1, (-1, self.norm_width or signed.shape[-1]))  # [B, T, G, w]
            self.seq_token_norm.append(groups.norm(dim=-1).mean(dim=-1))  # [B, T]
        if self.thresholds:
            magnitude = signed.abs()
            self.seq_exceed.append(torch.stack([(magnitude >= t).sum(dim=1) for t in self.thresholds], dim=1).float())
        self.width = stats["signed"].shape[-1]

    def add_probs(self, probs: torch.Tensor, mask: torch.Tensor) -> None:
        """Per sequence and head, the mean attention paid to each key k by the real queries q > k,
        without a [B, H, T, T] temporary: attention is causal (zero where k > q), so the sum over
        q > k is the sum over every real q (one matrix product) less the diagonal q = k."""
        probs = probs.detach()  # [B, H, Tq, Tk]
        valid_q = mask.float()  # [B, Tq]
        if probs.dtype == torch.float32:
            every_q = (valid_q[:, None, None, :] @ probs).squeeze(2)  # [B, H, Tk]
        else:  # float32 sums, one head at a time: a [B, T, T] copy instead of [B, H, T, T]
            every_q = torch.stack([(valid_q[:, None, :] @ probs[:, h].float()).squeeze(1) for h in range(probs.shape[1])], dim=1)
        diagonal = probs.diagonal(dim1=-2, dim2=-1).float() * valid_q[:, None, :]  # [B, H, T]: q = k
        later = valid_q.sum(dim=1, keepdim=True) - valid_q.cumsum(dim=1)  # [B, Tk]: real queries q > k
        self.key_attn.append((every_q - diagonal) / later.clamp(min=1)[:, None, :])

    # -------- finished views (cpu tensors)
    def mean(self) -> torch.Tensor:  # [T, F] position-wise mean over sequences
        assert self.total is not None and self.count is not None, "mean() before any chunk"
        return self.total / self.count.clamp(min=1)[:, None]

    def cells(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sequence, its K largest cells: (|a|, feature, token, signed a), each [S, K]."""
        values, flat, signed = (torch.cat(parts) for parts in zip(*self.seq_cells))
        return values, flat % self.width, flat // self.width, signed

    def top(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sequence, its top-1 cell: (|a| [S], feature [S], token [S])."""
        values, features, tokens, _ = self.cells()
        return values[:, 0], features[:, 0], tokens[:, 0]

    def dim_max(self) -> torch.Tensor:  # [S, F]
        return torch.cat(self.seq_dim_max)

    def token_max(self) -> torch.Tensor:  # [S, T] (T: the longest chunk; padding 0)
        return _cat_padded(self.seq_token_max)

    def slice(self, dim: int) -> torch.Tensor:  # [S, T] signed a of one captured feature
        return _cat_padded([part[..., dims.index(dim)] for dims, part in self.seq_slices])

    def median(self) -> torch.Tensor:  # [S]
        return torch.cat(self.seq_median)

    def token_norms(self) -> torch.Tensor:  # [S, T] (0 at padding)
        return _cat_padded(self.seq_token_norm)

    def exceeding(self, threshold: float) -> torch.Tensor:  # [S, F] real tokens with |a| >= threshold
        return torch.cat(self.seq_exceed)[:, self.thresholds.index(threshold)]

    def attention_to_keys(self) -> torch.Tensor:  # [S, H, T]
        width = max(part.shape[-1] for part in self.key_attn)
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[-1])) for p in self.key_attn])


@dataclass
class Pooled:
    """Per example, the mean of the activation [B, T, D] over its window's tokens -> [S, D] float32."""

    window: Window
    response_start: torch.Tensor  # [S] of the whole dataset; a chunk reads its rows from ctx.start
    parts: list = field(default_factory=list)
    overflow: bool = False

    def add(self, tensor: torch.Tensor, context: HookContext) -> None:
        act = tensor.detach().float()
        starts = self.response_start[context.start : context.start + act.shape[0]]
        inside = self.window.mask(context.mask.to(act.device), starts).float()  # [B, T]
        self.parts.append(torch.einsum("bt,btd->bd", inside, act) / inside.sum(dim=1)[:, None])  # [B, D]

    def finish(self) -> torch.Tensor:  # [S, D], on the cpu
        pooled = torch.cat(self.parts).cpu()
        self.overflow = not bool(torch.isfinite(pooled).all())
        return pooled


@dataclass
class UnitContributions:
    """Per sequence, each intermediate unit's contribution a_f x w_f to one output dim of the down
    projection (w [F]: the weights producing that dim; the bias is no unit's), at the sequence's
    real token where that output less bias is largest in |.|. Hooked at the projection's input
    [B, T, F] -> [S, F] float32: the output is a @ w, so its peak is known before the projection
    runs."""

    column: torch.Tensor  # [F]
    parts: list = field(default_factory=list)

    def add(self, tensor: torch.Tensor, context: HookContext) -> None:
        act = tensor.detach().float()  # [B, T, F]
        column = self.column.to(act.device, torch.float32)
        output = (act @ column).abs().masked_fill(context.mask.to(act.device) == 0, -1.0)  # [B, T]; padding never peaks
        peak = output.argmax(dim=1)  # [B]
        self.parts.append(act[torch.arange(act.shape[0], device=act.device), peak] * column)  # [B, F]

    def finish(self) -> torch.Tensor:  # [S, F], on the cpu
        return torch.cat(self.parts).cpu()


def contribution_pairs(
    needs: Needs, columns: dict[tuple[int, int], torch.Tensor]
) -> tuple[list[tuple[str, HookFn]], dict[tuple[int, int], UnitContributions]]:
    """(site, hook function) pairs at each asked layer's down projection input; the accumulators
    keyed by (layer, dim). columns: (layer, dim) -> the weights [F] producing that dim."""
    accumulators = {key: UnitContributions(columns[key]) for key in sorted(needs.contributions)}
    return [(hooks.site(layer, "mlp.down_in"), _adder(acc)) for (layer, _), acc in accumulators.items()], accumulators


def hidden_stats(sites: list[SiteStats], acts: torch.Tensor, context: HookContext, owned: bool = False) -> None:
    """Statistics of G sites' tensors of one chunk at once: acts [G, B, T, F], written only where
    `owned` (else it may be a view of the model's own tensor). All sites share with_median. In a
    half-precision dtype every statistic but the sum is one of its values, so exact in that dtype:
    only the sum accumulates in float32, and only the kept results are float32 copies."""
    real = context.shared(("real", acts.device), lambda: context.mask.to(acts.device).bool())  # [B, T]
    padding = context.shared(("padding", acts.device), lambda: ~real[..., None])  # [B, T, 1]
    signed = acts.masked_fill_(padding, 0.0) if owned else acts.masked_fill(padding, 0.0)  # [G, B, T, F]; padding -> 0
    magnitude = signed.abs()
    count = context.shared(("count", acts.device), lambda: real.sum(dim=0).float())  # [T]
    cell_max, total = magnitude.amax(dim=1).float(), signed.sum(dim=1, dtype=torch.float32)  # [G, T, F]
    dim_max, token_max = magnitude.amax(dim=2).float(), magnitude.amax(dim=3).float()  # [G, B, F], [G, B, T]
    values, flat = magnitude.flatten(2).topk(min(SEQ_CELLS, magnitude[0, 0].numel()), dim=2)  # [G, B, K]
    values, top_signed = values.float(), signed.flatten(2).gather(2, flat).float()
    median = None
    if sites[0].with_median:
        tokens = context.shared(("real tokens", acts.device), lambda: real.sum(dim=1))  # [B]
        at = context.shared(
            ("median at", acts.device, acts.shape[2:]),  # per width: sites differ in F
            lambda: sorted_median_at(tokens * acts.shape[-1], acts[0, 0].numel()),
        )
        median = lower_median(magnitude, padding, at).float()  # [G, B]
    for g, site in enumerate(sites):
        site.keep(
            {
                "cell_max": cell_max[g],
                "total": total[g],
                "count": count,
                "dim_max": dim_max[g],
                "token_max": token_max[g],
                "cells": (values[g], flat[g], top_signed[g]),
                "signed": signed[g],
                "median": None if median is None else median[g],
            }
        )


# A held stack's bytes: a share of the device's free memory (like the batch size), so all blocks
# of a forward call are usually one stack (one topk, one median selection for all). Its statistics
# peak at ~3x the stack (the stack, |a|, the median's int32 digits per SELECT_CELLS). HOLD_BYTES
# set: that size (tests).
HOLD_SHARE = 0.05
HOLD_MIN_BYTES = 16 * 2**20
HOLD_BYTES: int | None = None


def _hold_bytes_of(context: HookContext, act: torch.Tensor) -> int:
    """hold_bytes, read once per forward call (a device query per hook call is host work)."""
    return context.shared(("hold bytes", act.device), lambda: hold_bytes(act.device))


def hold_bytes(device: torch.device) -> int:
    """HOLD_SHARE of the device's free memory (with the GPU's ways forced on the cpu: of the
    machine's available memory, so launch counts there are a GPU's)."""
    if HOLD_BYTES is not None:
        return HOLD_BYTES
    return max(HOLD_MIN_BYTES, int((free_bytes(device) or 0) * HOLD_SHARE))


class HeldHidden:
    """On a GPU: the hidden-like tensors of one forward call, held (references, no copy) in groups
    by shape, dtype and median need (at most the pass's site count deep, and a share of the free
    memory), whose statistics are computed G sites at a time when a group fills and when the call
    ends: one stacking copy and a few launches per G sites instead of per site. On an H100 a
    SmolLM2 pass was bound by launches (2,610 per pass), and topk and sort cost ~0.3 ms of cpu each.

    Holding a reference is exact as long as the model does not write the tensor again after the
    hook (the supported architectures never do: edits and residual adds make new tensors); each
    tensor's version counter is checked when its group is stacked, and a write is an error, never
    a silently wrong statistic."""

    def __init__(self, context: HookContext):
        self.context = context
        self.groups: dict[tuple, list[tuple[SiteStats, torch.Tensor, int]]] = {}  # key -> (site, tensor, version)
        self.depth: dict[tuple, int] = {}  # key -> how many tensors a group holds before its statistics run

    def hold(self, site: SiteStats, act: torch.Tensor) -> None:
        key = (tuple(act.shape), act.dtype, site.with_median)
        if key not in self.depth:
            self.depth[key] = max(
                1, min(site.pass_sites, _hold_bytes_of(self.context, act) // (act.numel() * act.element_size()))
            )
        group = self.groups.setdefault(key, [])
        group.append((site, act.detach(), act._version))  # detach shares the version counter
        if len(group) == self.depth[key]:
            self.flush(key)

    def flush(self, key: tuple) -> None:
        group = self.groups.pop(key)
        if any(act._version != version for _, act, version in group):
            raise RuntimeError(
                f"the model wrote a captured {list(key[0])} tensor in place after its hook ran, so a held reference no "
                "longer holds what the hook saw (set massive_checks.engine.selection.GPU_WAYS = False; please report the architecture)"
            )
        sites = [site for site, _, _ in group]
        if len(group) == 1:  # a view of the model's tensor: not written
            hidden_stats(sites, group[0][1][None], self.context)
            return
        stack = torch.stack([act for _, act, _ in group])  # [G, B, T, F]: one launch
        del group  # the references go before the statistics' temporaries come
        hidden_stats(sites, stack, self.context, owned=True)

    def flush_all(self) -> None:
        for key in list(self.groups):
            self.flush(key)


def _held(context: HookContext) -> HeldHidden:
    holder = HeldHidden(context)
    context.at_end(holder.flush_all)
    return holder


def finish_all(accumulators: dict[str, SiteStats]) -> dict[str, SiteStats]:
    """Finish every site of a pass: all kept tensors to the cpu in a few packed copies, then the
    overflow check on the copies."""
    sites = list(accumulators.values())
    kept: list[torch.Tensor] = []

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        kept.append(tensor)
        return tensor

    for site in sites:
        site.map_tensors(keep)
    copies = iter(to_host(kept))
    for site in sites:
        site.map_tensors(lambda _: next(copies))
    check_finite(sites)
    return accumulators


def check_finite(sites: list[SiteStats]) -> None:
    """Set each site's overflow flag from its cpu copies: max |a| per feature over real tokens shows
    an inf/nan in any real cell, and these are >= 0, so their float64 sum is finite exactly when all
    of them are. The parts of one shape (every block of a pass) are summed by one op, not one per
    site: with the GPU's ways this was 30 of a SmolLM2 pass's 135 ops beyond the plain forward."""
    by_shape: dict[tuple, list[tuple[SiteStats, torch.Tensor]]] = {}
    for site in sites:
        for part in site.seq_dim_max:
            by_shape.setdefault(tuple(part.shape), []).append((site, part))
    for shape, group in by_shape.items():
        totals = torch.stack([part for _, part in group]).sum(dim=tuple(range(1, len(shape) + 1)), dtype=torch.float64)  # [G]
        for (site, _), total in zip(group, totals.tolist()):
            site.overflow = site.overflow or not math.isfinite(total)


def _cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate [B, T_i] chunks along B, padding each to the longest T with zeros."""
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])


def _merge_max(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = _pad_to_same(a, b)
    return torch.maximum(a, b)


def _merge_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = _pad_to_same(a, b)
    return a + b


def _pad_to_same(a, b):  # chunks may differ in length T (dim 0)
    T = max(a.shape[0], b.shape[0])
    pad = lambda x: torch.nn.functional.pad(x, (0, 0) * (x.dim() - 1) + (0, T - x.shape[0]))
    return pad(a), pad(b)


def stat_pairs(needs: Needs) -> tuple[list[tuple[str, HookFn]], dict[str, SiteStats]]:
    """(site, hook function) pairs capturing what `needs` asks for, and the accumulators they fill."""
    slices = _by_site(needs.slices)
    norm_widths = dict(sorted(needs.norms))
    if len(norm_widths) < len(needs.norms):
        raise ValueError(f"token norms asked with two group widths at one site: {sorted(needs.norms)}")
    thresholds = _by_site(needs.exceed)
    names = sorted(needs.sites | set(norm_widths) | set(thresholds))
    accumulators = {
        name: SiteStats(
            with_median=name in needs.medians,
            slice_dims=slices.get(name, ()),
            norm_width=norm_widths.get(name),
            thresholds=thresholds.get(name, ()),
            pass_sites=len(names),
        )
        for name in names
    }
    return [(name, _adder(acc)) for name, acc in accumulators.items()], accumulators


def _by_site(pairs) -> dict[str, tuple]:
    """{(site, x), ...} -> {site: (x, ...)}, each sorted."""
    grouped: dict[str, tuple] = {}
    for name, value in sorted(pairs):
        grouped[name] = (*grouped.get(name, ()), value)
    return grouped


def pooled_pairs(
    needs: Needs, mask: torch.Tensor, response_start: torch.Tensor | None
) -> tuple[list[tuple[str, HookFn]], dict[tuple[str, str], Pooled]]:
    """(site, hook function) pairs pooling each window at every captured block output; the
    accumulators keyed by (site, window text). mask [S, T], response_start [S]: the dataset's."""
    blocks = sorted(name for name in needs.sites if name.endswith(".out") and name.count(".") == 2)
    windows = {text: Window.parse(text) for text in sorted(needs.pooled)}
    if not windows:
        return [], {}
    if response_start is None:
        raise ValueError(f"windows {', '.join(windows)} need a contrast set (its responses' first tokens)")
    for window in windows.values():
        window.require_tokens(mask, response_start)  # before the pass, not a device sync per hook call
    accumulators = {(name, text): Pooled(window, response_start) for name in blocks for text, window in windows.items()}
    return [(name, _adder(acc)) for (name, _), acc in accumulators.items()], accumulators


def _adder(accumulator) -> HookFn:
    def add(tensor, context):
        accumulator.add(tensor, context)
        return None  # a capture never replaces the tensor

    return add
