"""Where massive activations are, by the paper's rule (stats.is_massive, with the spec's
`massive:` parameters), applied per sequence with that sequence's median."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

from massive_checks.base.lazy import LazyModule
from massive_checks.language.intervals import Estimate, SharedSet
from massive_checks.language.interventions import ranges
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


WITNESSES = 5  # cases a count names in its verdict


class _Cases(Measure):
    """A count of cases on this data - (sequence, token) positions that are a case after some
    block of the range - exact, with no interval. A claim of "every" is a count of
    its counterexamples with `at_most: 0` (one case contradicts it); a claim of "some" is a
    count of its examples with `at_least: 1` (one case shows it). The verdict names the first
    cases (sequence, block, token)."""

    shape: ClassVar[str] = "value"
    layered: ClassVar[bool] = True
    uses_massive_rule: ClassVar[bool] = True
    value_range: ClassVar = (0.0, math.inf)
    fixed: ClassVar[str] = "a count of cases on this data: exact"

    def figure(self, view, layers):
        return cells_panel(view)

    def compute(self, view, layers):
        hits = self.cases(view, layers)  # [L, S, T]
        blocks: dict[tuple[int, int], list[int]] = {}  # (sequence, token) -> the blocks where it is a case
        for i, sequence, token in hits.nonzero().tolist():
            blocks.setdefault((sequence, token), []).append(layers[i])
        count = len(blocks)
        named = tuple(
            f"sequence {s} token {t} ({token_text(view, s, t)!r}) in blocks {ranges(blocks[s, t])}"
            for s, t in sorted(blocks)[:WITNESSES]
        )
        plural = "" if count == 1 else "s"
        where = f"{view.units().n} sequences, blocks {layers[0]}-{layers[-1]}" if layers else "no blocks"
        return Estimate(float(count), None, view.units(), f"exact: {count} position{plural} counted over {where}", named)

    def cases(self, view, layers: list[int]):
        """[L, S, T] bool: the (sequence, token) positions of each block of `layers` that are cases."""
        raise NotImplementedError


def token_text(view, sequence: int, token: int) -> str:
    return view.lm.tokenizer.decode([int(view.batch.input_ids[sequence, token])])


@register
class MassivePositions(_Cases):
    """How many (sequence, token) positions hold a massive activation after some block of the
    range: an existence claim is `at_least: 1`, decided by one example."""

    measure: Literal["massive_positions"] = "massive_positions"

    def cases(self, view, layers):
        return token_hits(view, layers)


@register
class MassiveElsewhere(_Cases):
    """How many (sequence, token) positions massive after some block sit on neither the sequence's first
    token nor its first delimiter ("." or a newline): "every massive activation sits there" is
    `at_most: 0`, contradicted by one counterexample."""

    measure: Literal["massive_elsewhere"] = "massive_elsewhere"

    def cases(self, view, layers):
        return massive_elsewhere(view, layers)


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
class MassiveElsewhereShare(Measure):
    """Share of massive positions (sequence, token), over blocks, on neither the sequence's first
    token nor its first delimiter ("." or a newline); nan when nothing is massive. A ratio of
    per-sequence counts, resampled by sequence (how common they are; "every" is massive_elsewhere)."""

    measure: Literal["massive_elsewhere_share"] = "massive_elsewhere_share"
    shape: ClassVar[str] = "value"
    layered: ClassVar[bool] = True
    uses_massive_rule: ClassVar[bool] = True
    value_range: ClassVar = (0.0, 1.0)

    def compute(self, view, layers):
        total = torch.zeros(view.units().n, dtype=torch.float64)
        for layer in layers:
            total = total + readings.massive_hits(view, layer, "token").sum(dim=1)
        elsewhere = massive_elsewhere(view, layers).sum(dim=(0, 2)).double()  # [S]
        return view.bootstrap.ratio_of_totals(elsewhere.numpy(), total.numpy(), view.units())


def token_hits(view, layers: list[int]):
    """[L, S, T] bool: readings.massive_hits per block (an empty range: no hits)."""
    if not layers:
        return torch.zeros((0, *view.batch.input_ids.shape), dtype=torch.bool)
    return torch.stack([readings.massive_hits(view, L, "token") for L in layers])


def massive_elsewhere(view, layers: list[int]):
    """[L, S, T] bool: massive positions of each block on neither the sequence's first token nor
    its first delimiter (the delimiters found once)."""
    delimiters = readings.first_delimiters(view)  # [S]
    hits = token_hits(view, layers)  # [L, S, T]
    positions = torch.arange(hits.shape[2])[None, :]
    allowed = (positions == 0) | (positions == delimiters[:, None])  # [S, T]
    return hits & ~allowed[None]
