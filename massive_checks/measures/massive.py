"""Where massive activations are, by the paper's rule (stats.is_massive, with the spec's
`massive:` parameters), applied per sequence with that sequence's median."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal


from ..spec.intervals import SharedSet
from ..lazy import LazyModule
from ..output.panels import CellsPanel
from .base import Measure, register

if TYPE_CHECKING:
    import torch
    from ..engine import hooks, stats
else:  # imported at first use: the spec schema reads the measure classes without torch
    torch = LazyModule("torch")
    hooks = LazyModule("massive_checks.engine.hooks")
    stats = LazyModule("massive_checks.engine.stats")


def massive_dims(view, layer: int) -> set[int]:
    """Dims holding a massive cell in some sequence."""
    block = view.block(layer)
    return stats.massive_indices(block.dim_max(), block.median(), view.min_value, view.min_ratio)


def massive_hits(view, layer: int, axis: str) -> torch.Tensor:
    """[S, F] (axis "dim") or [S, T] ("token") bool: where each sequence holds a massive cell."""
    block = view.block(layer)
    maxima = block.dim_max() if axis == "dim" else block.token_max()
    return stats.is_massive(maxima, block.median()[:, None], view.min_value, view.min_ratio)


def massive_tokens(view, layer: int) -> set[int]:
    block = view.block(layer)
    return stats.massive_indices(block.token_max(), block.median(), view.min_value, view.min_ratio)


def massive_examples(view, layer: int) -> tuple[list[stats.Cell], bool]:
    """Massive cells among each sequence's largest, and whether there may be more."""
    block = view.block(layer)
    return stats.massive_examples(block.cells(), block.median(), view.min_value, view.min_ratio)


def massive_cells(view, layers: list[int], dims: list[int] | None = None) -> dict:
    """{(layer, dim): (positions per sequence, mean signed value there)} for the cells where each
    dim is massive after each block (dims None: every dim massive there). One pass reads all the
    every-token values needed."""
    wanted = [(hooks.site(L, "out"), d) for L in layers for d in (dims if dims is not None else sorted(massive_dims(view, L)))]
    names = sorted({name for name, _ in wanted})
    captured = view.captures(names, names, slices=wanted)
    return {(hooks.layer_of(name), d): _massive_rows(view, captured[name], d) for name, d in wanted}


def _massive_rows(view, site_stats, dim: int) -> tuple[tuple[tuple[int, ...], ...], float]:
    signed = site_stats.slice(dim)  # [S, T]
    hits = stats.is_massive(signed.abs(), site_stats.median()[:, None], view.min_value, view.min_ratio)
    rows = tuple(tuple(int(t) for t in row.nonzero().flatten()) for row in hits)
    return rows, (float(signed[hits].mean()) if bool(hits.any()) else 0.0)


def first_delimiters(view) -> torch.Tensor:
    """[S] position of each sequence's first delimiter token after position 0 (-1: none)."""
    batch, tokenizer = view.batch, view.lm.tokenizer
    vocab = {int(i): tokenizer.decode([int(i)]) for i in batch.input_ids.unique()}
    delimiter = torch.tensor([[("." in vocab[int(i)] or "\n" in vocab[int(i)]) for i in row] for row in batch.input_ids])
    delimiter[:, 0] = False
    delimiter &= batch.attention_mask.bool()
    first = delimiter.float().argmax(dim=1)
    return torch.where(delimiter.any(dim=1), first, torch.full_like(first, -1))


def peak_layer(view) -> int:
    return max(range(view.lm.n_layers), key=lambda L: float(view.block(L).cell_max.max()))


def cells_panel(view) -> list[CellsPanel]:
    """The figure panel of where-measures: max |a| over sequences of the first 8 tokens at the
    peak layer, massive dims marked."""
    peak = peak_layer(view)
    return [CellsPanel(view.block(peak).cell_max[:8].numpy(), peak, tuple(sorted(massive_dims(view, peak))))]


class _Where(Measure):
    shape: ClassVar[str] = "set"
    layered: ClassVar[bool] = True
    uses_massive_rule: ClassVar[bool] = True

    def figure(self, view, layers):
        return cells_panel(view)


class _WhereOver(_Where):
    """The dims (or token positions) holding a massive activation in some sequence over the
    layer range, with the share of sequences holding each."""

    axis: ClassVar[str]

    def compute(self, view, layers):
        hits = torch.stack([massive_hits(view, L, self.axis) for L in layers]).any(dim=0)  # [S, E]
        return SharedSet.of_hits(hits.numpy(), view.units())


@register
class MassiveDims(_WhereOver):
    """Residual dims holding a massive activation in some sequence, over the layer range."""

    measure: Literal["massive_dims"] = "massive_dims"
    dims_in_bound: ClassVar[bool] = True
    axis: ClassVar[str] = "dim"


@register
class MassiveTokens(_WhereOver):
    """Token positions holding a massive activation in some sequence, over the layer range."""

    measure: Literal["massive_tokens"] = "massive_tokens"
    axis: ClassVar[str] = "token"


@register
class MassivePositions(_Where):
    """How many (sequence, token) positions of the data set hold a massive activation after some
    block of the range: an existence claim is `at_least: 1`."""

    measure: Literal["massive_positions"] = "massive_positions"
    shape: ClassVar[str] = "value"
    value_range: ClassVar = (0.0, math.inf)

    def compute(self, view, layers):
        hits = torch.stack([massive_hits(view, L, "token") for L in layers]).any(dim=0)  # [S, T]
        return view.bootstrap.total(hits.sum(dim=1).double().numpy(), view.units())


@register
class EmergenceLayer(Measure):
    """The first layer (of the range) where some sequence holds a massive activation; inf if
    none does. Resampled: the first such layer among the resampled sequences."""

    measure: Literal["emergence_layer"] = "emergence_layer"
    shape: ClassVar[str] = "value"
    layered: ClassVar[bool] = True
    uses_massive_rule: ClassVar[bool] = True
    value_range: ClassVar = (0.0, math.inf)

    def compute(self, view, layers):
        first = torch.full((view.units().n,), math.inf, dtype=torch.float64)  # [S] each sequence's first layer
        for layer in reversed(layers):
            first = torch.where(massive_hits(view, layer, "dim").any(dim=1), float(layer), first)
        return view.bootstrap.minimum(first.numpy(), view.units())


@register
class MassiveElsewhere(Measure):
    """Share of massive positions (sequence, token), over blocks, on neither the sequence's first
    token nor its first delimiter ("." or a newline); nan when nothing is massive. A ratio of
    per-sequence counts, resampled by sequence."""

    measure: Literal["massive_elsewhere"] = "massive_elsewhere"
    shape: ClassVar[str] = "value"
    layered: ClassVar[bool] = True
    uses_massive_rule: ClassVar[bool] = True
    value_range: ClassVar = (0.0, 1.0)

    def compute(self, view, layers):
        delimiters = first_delimiters(view)  # [S]
        total = elsewhere = torch.zeros(view.units().n, dtype=torch.float64)
        for layer in layers:
            hits = massive_hits(view, layer, "token")  # [S, T]
            positions = torch.arange(hits.shape[1])[None, :]
            allowed = (positions == 0) | (positions == delimiters[:, None])
            total = total + hits.sum(dim=1)
            elsewhere = elsewhere + (hits & ~allowed).sum(dim=1)
        return view.bootstrap.ratio_of_totals(elsewhere.numpy(), total.numpy(), view.units())
