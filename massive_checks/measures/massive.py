"""Where massive activations are, by the paper's rule (stats.is_massive, with the spec's
`massive:` parameters), applied per sequence with that sequence's median."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

from massive_checks.base.lazy import LazyModule
from massive_checks.language.intervals import SharedSet
from massive_checks.measures.base import Measure, register
from massive_checks.measures.panels import CellsPanel

if TYPE_CHECKING:
    import torch

    from massive_checks.engine import hooks, readings, stats
else:  # imported at first use: the spec schema reads the measure classes without torch
    torch = LazyModule("torch")
    readings = LazyModule("massive_checks.engine.readings")
    hooks = LazyModule("massive_checks.engine.hooks")
    stats = LazyModule("massive_checks.engine.stats")


def cells_panel(view) -> list[CellsPanel]:
    """The figure panel of where-measures: max |a| over sequences of the first 8 tokens at the
    peak layer, massive dims marked."""
    peak = readings.peak_layer(view)
    return [CellsPanel(view.block(peak).cell_max[:8].numpy(), peak, tuple(sorted(readings.massive_dims(view, peak))))]


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
        hits = torch.stack([readings.massive_hits(view, L, self.axis) for L in layers]).any(dim=0)  # [S, E]
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
        hits = torch.stack([readings.massive_hits(view, L, "token") for L in layers]).any(dim=0)  # [S, T]
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
            first = torch.where(readings.massive_hits(view, layer, "dim").any(dim=1), float(layer), first)
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
        delimiters = readings.first_delimiters(view)  # [S]
        total = elsewhere = torch.zeros(view.units().n, dtype=torch.float64)
        for layer in layers:
            hits = readings.massive_hits(view, layer, "token")  # [S, T]
            positions = torch.arange(hits.shape[1])[None, :]
            allowed = (positions == 0) | (positions == delimiters[:, None])
            total = total + hits.sum(dim=1)
            elsewhere = elsewhere + (hits & ~allowed).sum(dim=1)
        return view.bootstrap.ratio_of_totals(elsewhere.numpy(), total.numpy(), view.units())
