"""The layer profile: top-k |a| of the block output, its median and ratio, where the top-1 sits,
and one dim's peak. Two statistics (claims.md, "The statistic behind the numbers"):
  paper               per sequence, the top-k of its flattened |a| (or its max in one dim),
                      averaged over sequences (Sun et al. 2024 and the seeds); the default
  max_over_sequences  the k-th largest cell of the per-(token, dim) maximum over sequences"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, create_model

from massive_checks.base.lazy import LazyModule
from massive_checks.language import interventions
from massive_checks.language.intervals import Estimate, SharedSet, value_of
from massive_checks.language.measure import STATISTIC_TEXT
from massive_checks.measures.base import Measure, PerLayer, Statistic, register
from massive_checks.measures.massive import cells_panel

if TYPE_CHECKING:
    from massive_checks.engine import readings, stats
else:  # imported at first use: the spec schema reads the measure classes without torch
    stats = LazyModule("massive_checks.engine.stats")
    readings = LazyModule("massive_checks.engine.readings")


TwoStatistics = Literal["paper", "max_over_sequences"]  # a ratio of means, a location: no coefficient of variation
EXTREME = (
    "max_over_sequences is an extreme over sequences: the bootstrap does not estimate an "
    "extreme's sampling spread (use the paper statistic for an interval)"
)


def top_value(view, layer: int, k: int, statistic: str = "paper") -> Estimate | float:
    """paper: each sequence's k-th largest |a|, averaged over sequences (with its interval);
    cv_over_sequences: their coefficient of variation over sequences."""
    if statistic != "max_over_sequences":
        return view.over_sequences(view.block(layer).cells()[0][:, k - 1], statistic)
    return top_cells(view, layer, k)[k - 1].value


def top_cells(view, layer: int, k: int = 3) -> list[stats.Cell]:
    """The k largest cells of the per-(token, dim) max over sequences: where values sit."""
    return stats.top_cells(view.block(layer).cell_max, k)


def median(view, layer: int) -> Estimate:
    """Each sequence's median |a| over its real tokens and dims, averaged over sequences."""
    return view.mean(view.block(layer).median())


def ratio(view, layer: int, statistic: str = "paper") -> Estimate | float:
    """top-1 / median, both averaged over sequences (the seeds' ratio column: 2475 / 0.84); a
    ratio of means, resampled as one (paired)."""
    top = top_value(view, layer, 1, statistic)
    if statistic != "paper":
        return stats.ratio(value_of(top), value_of(median(view, layer)))
    return top / median(view, layer)  # replicate by replicate (intervals.safe_divide)


def profile_of(view) -> dict:
    """{"top1": [per layer], "top2", "top3", "median"} in the paper's statistic: what every spec
    carries for each configuration it reads (values only)."""
    layers = range(view.lm.n_layers)
    result = {f"top{k}": [value_of(top_value(view, L, k)) for L in layers] for k in (1, 2, 3)}
    result["median"] = [value_of(median(view, L)) for L in layers]
    return result


class _BlockMeasure(PerLayer):
    """A number per layer of the block output, computed by the function it was registered with."""

    compute_at: ClassVar  # (view, layer, statistic) -> Estimate (paper) or float
    value_range: ClassVar = (0.0, math.inf)

    def at(self, view, layer):
        return type(self).compute_at(view, layer, getattr(self, "statistic", "paper"))

    def no_interval(self) -> str:
        return EXTREME if getattr(self, "statistic", "paper") == "max_over_sequences" else ""


def _block_measure(class_name: str, name: str, doc: str, compute_at, statistic: Any = Statistic) -> type[Measure]:
    """Register a per-layer measure of the block output (with `statistic`, of these values, unless None)."""
    fields: dict[str, Any] = {"measure": (Literal[name], name), **({"statistic": (statistic, "paper")} if statistic else {})}
    cls = create_model(class_name, __base__=_BlockMeasure, __doc__=doc, **fields)
    cls.compute_at = staticmethod(compute_at)
    return register(cls)


Top1 = _block_measure("Top1", "top1", "The largest |a| of the block output.", lambda v, L, st: top_value(v, L, 1, st))
Top2 = _block_measure("Top2", "top2", "The second largest |a| of the block output.", lambda v, L, st: top_value(v, L, 2, st))
Top3 = _block_measure("Top3", "top3", "The third largest |a| of the block output.", lambda v, L, st: top_value(v, L, 3, st))
Median = _block_measure(
    "Median", "median", "Median |a| of the block output (per sequence, averaged).", lambda v, L, st: median(v, L), statistic=None
)
Ratio = _block_measure("Ratio", "ratio", "top-1 / median of the block output.", ratio, statistic=TwoStatistics)


class _TopWhere(Measure):
    """The dim (or token) of the top-1: the set over sequences of each one's top-1 ("paper"), or
    the single top cell of the max over sequences."""

    shape: ClassVar[str] = "label_per_layer"
    layered: ClassVar[bool] = True
    statistic: TwoStatistics = "paper"
    axis: ClassVar[str]

    def compute(self, view, layers):
        return {L: self._at(view, L) for L in layers}

    def _at(self, view, layer):
        if self.statistic == "paper":  # each sequence's top-1, with the share of sequences it is in
            _, features, tokens = view.block(layer).top()
            return SharedSet.of_labels((features if self.axis == "dim" else tokens).numpy(), view.units())
        cell = top_cells(view, layer, 1)[0]
        return cell.dim if self.axis == "dim" else cell.token

    def figure(self, view, layers):
        return cells_panel(view)


@register
class Top1Dim(_TopWhere):
    """The residual dim of the top-1 activation."""

    measure: Literal["top1_dim"] = "top1_dim"
    axis: ClassVar[str] = "dim"
    dims_in_bound: ClassVar[bool] = True


@register
class Top1Token(_TopWhere):
    """The token position of the top-1 activation."""

    measure: Literal["top1_token"] = "top1_token"
    axis: ClassVar[str] = "token"


@register
class DimPeak(PerLayer):
    """max |a| of one residual dim over real tokens."""

    measure: Literal["dim_peak"] = "dim_peak"
    dim: int = Field(ge=0, lt=10**9)
    statistic: Statistic = "paper"
    value_range: ClassVar = (0.0, math.inf)

    def at(self, view, layer):
        block = view.block(layer)
        if self.statistic != "max_over_sequences":
            return view.over_sequences(block.dim_max()[:, self.dim], self.statistic)
        return float(block.cell_max[:, self.dim].max())

    def no_interval(self) -> str:
        return EXTREME if self.statistic == "max_over_sequences" else ""

    def check_model(self, lm, layers):
        if self.dim >= lm.width:
            raise ValueError(f"dim {self.dim}: {lm.name}'s residual stream has {lm.width} dims (0-{lm.width - 1})")

    def figure(self, view, layers):
        return cells_panel(view)


def profile_document(view) -> dict:
    """The `massive-checks profile --json` document: per layer the max-over-sequences cells
    ("top", "median", "ratio" of top-1 cell / median) and the paper's statistic ("paper")."""
    layers, n = [], view.lm.n_layers
    for layer in range(n):
        paper = {
            "top": [value_of(top_value(view, layer, k)) for k in (1, 2, 3)],
            "median": value_of(median(view, layer)),
            "ratio": value_of(ratio(view, layer)),
        }
        layers.append(
            {
                "layer": layer,
                "top": [c.as_dict() for c in top_cells(view, layer)],
                "median": value_of(median(view, layer)),
                "ratio": ratio(view, layer, "max_over_sequences"),
                "paper": paper,
            }
        )
    examples = [readings.massive_examples(view, layer) for layer in range(n)]
    massive = [{"layer": layer, **cell.as_dict()} for layer, (cells, _) in enumerate(examples) for cell in cells]
    return {
        "model": view.lm.name,
        "intervention": interventions.describe(view.intervention),
        "statistics": STATISTIC_TEXT,
        "layers": layers,
        "massive": massive,
        "massive_truncated_layers": [layer for layer, (_, more) in enumerate(examples) if more],
        "massive_dims_per_layer": {layer: sorted(readings.massive_dims(view, layer)) for layer in range(n)},
        "massive_tokens_per_layer": {layer: sorted(readings.massive_tokens(view, layer)) for layer in range(n)},
    }
