"""Inside the MLP: |a| at its checkpoints, where it explodes, and which intermediate units write a
residual dim."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

from pydantic import Field

from massive_checks.base.lazy import LazyModule
from massive_checks.engine.needs import Needs
from massive_checks.language.intervals import Estimate, value_of
from massive_checks.measures.base import Measure, PerLayer, Statistic, register
from massive_checks.measures.panels import FlowPanel
from massive_checks.measures.profile import EXTREME

if TYPE_CHECKING:
    import torch

    from massive_checks.engine import hooks, stats
else:  # imported at first use: the spec schema reads the measure classes without torch
    torch = LazyModule("torch")
    hooks = LazyModule("massive_checks.engine.hooks")
    stats = LazyModule("massive_checks.engine.stats")

Checkpoint = Literal["in", "up", "gate", "act", "down_in", "out", "resid"]
MLP_FLOW = get_args(Checkpoint)  # checkpoint order inside an MLP


def mlp_flow(lm) -> list[str]:
    """MLP checkpoints in flow order; `gate` only for gated MLPs, `resid` (the post-feedforward
    norm's output, what is added to the residual stream) only where it differs from `out`."""
    return [c for c in MLP_FLOW if (c != "gate" or lm.adapter.gate is not None) and (c != "resid" or lm.adapter.mlp_resid)]


def mlp_stat(view, layer: int, checkpoint: str, what: str, statistic: str = "paper") -> Estimate | float:
    """max |a| (per sequence then averaged, or over all) or median |a| inside an MLP."""
    site_stats = view.stats(hooks.site(layer, f"mlp.{checkpoint}"), median=(what == "median"))
    if what == "median":
        return view.mean(site_stats.median())
    return view.mean(site_stats.dim_max().amax(dim=1)) if statistic == "paper" else float(site_stats.cell_max.max())


def activation_input(lm) -> str:
    """The checkpoint the activation function reads: the gate of a gated MLP, else up."""
    return "gate" if lm.adapter.gate is not None else "up"


def activation_range(view, layer: int, statistic: str) -> tuple[float, float, str]:
    """[low, high] that max |act| cannot leave given its input x's largest-|x| cell M of each
    sequence (signed): at least |f(M)| (that cell's own output), at most the largest |f(x)| over
    |x| <= |M| (no other input is larger), whatever the other values are. Per sequence, then
    averaged (the paper statistic), or of the sequence holding the largest cell (max over sequences).
    f is the model's own activation module, evaluated in float64 (a grid of 4097 points in [-|M|, |M|])."""
    source = activation_input(view.lm)
    extremes = view.stats(hooks.site(layer, f"mlp.{source}")).cells()[3][:, 0].double()  # [S] signed
    if statistic != "paper":
        extremes = extremes[extremes.abs().argmax()][None]
    act = hooks.resolve(view.lm, hooks.site(layer, "mlp.act"))[0]
    reach = extremes.abs()[:, None] * torch.linspace(-1.0, 1.0, 4097, dtype=torch.float64)  # [S, 4097]
    with torch.no_grad():
        low, high = act(extremes).abs().mean(), act(reach).abs().amax(dim=1).mean()
    positive = int((extremes > 0).sum())
    why = (
        f"{type(act).__name__} confines max |act| to [{float(low):.6g}, {float(high):.6g}] given max |{source}| "
        f"(its largest cell is positive in {positive} of {len(extremes)} sequences)"
    )
    return float(low), float(high), why


def neuron_contributions(view, layer: int, dim: int) -> torch.Tensor:
    """[F] each unit's contribution to output `dim`, at each sequence's token where it peaks,
    averaged over sequences (view.contributions: [S, F])."""
    return view.contributions(layer, dim).double().mean(dim=0)


def flow_panel(view, layers: list[int]) -> list[FlowPanel]:
    """Max |a| at each checkpoint the pass captured, per layer."""
    return [
        FlowPanel(
            {
                L: {
                    c: value_of(mlp_stat(view, L, c, "max"))
                    for c in mlp_flow(view.lm)
                    if view.captured(hooks.site(L, f"mlp.{c}"))
                }
                for L in layers
            }
        )
    ]


class _Checkpoint(PerLayer):
    checkpoint: Checkpoint = "out"
    value_range: ClassVar = (0.0, math.inf)

    def check_model(self, lm, layers):
        if self.checkpoint not in mlp_flow(lm):
            raise ValueError(f"checkpoint {self.checkpoint!r}: {lm.name}'s MLP has {', '.join(mlp_flow(lm))}")

    def figure(self, view, layers):
        return flow_panel(view, layers)


@register
class MlpMax(_Checkpoint):
    """max |a| at an MLP checkpoint."""

    measure: Literal["mlp_max"] = "mlp_max"
    statistic: Statistic = "paper"

    def needs(self, lm, layers):
        return Needs(sites={hooks.site(L, f"mlp.{self.checkpoint}") for L in layers})

    def at(self, view, layer):
        return mlp_stat(view, layer, self.checkpoint, "max", self.statistic)

    def no_interval(self) -> str:
        return EXTREME if self.statistic == "max_over_sequences" else ""

    def forced_by(self, other, view, layers):
        """The activation's max given its input's (activation_range), at the same statistic."""
        reads_input = isinstance(other, MlpMax) and other.checkpoint == activation_input(view.lm)
        if self.checkpoint != "act" or not reads_input or other.statistic != self.statistic:
            return {}
        return {layer: activation_range(view, layer, self.statistic) for layer in layers}


@register
class MlpMedian(_Checkpoint):
    """median |a| at an MLP checkpoint (per sequence, averaged)."""

    measure: Literal["mlp_median"] = "mlp_median"

    def needs(self, lm, layers):
        sites = {hooks.site(L, f"mlp.{self.checkpoint}") for L in layers}
        return Needs(sites=sites, medians=set(sites))

    def at(self, view, layer):
        return mlp_stat(view, layer, self.checkpoint, "median")


@register
class ExplosionPoint(Measure):
    """The MLP checkpoint (in flow order) whose max |a| grows most over the previous one."""

    measure: Literal["explosion_point"] = "explosion_point"
    layer: int = Field(ge=0, lt=10**9)
    shape: ClassVar[str] = "label"
    labels: ClassVar[tuple[str, ...]] = MLP_FLOW

    def needs(self, lm, layers):
        return Needs(sites={hooks.site(self.layer, f"mlp.{c}") for c in mlp_flow(lm)})

    def compute(self, view, layers):
        return stats.explosion_point({c: value_of(mlp_stat(view, self.layer, c, "max")) for c in mlp_flow(view.lm)})

    def check_model(self, lm, layers):
        _layer_exists(lm, self.layer)

    def figure(self, view, layers):
        return flow_panel(view, [self.layer])


class _Units(Measure):
    layer: int = Field(ge=0, lt=10**9)
    dim: int = Field(ge=0, lt=10**9)
    k: int = Field(5, ge=1, lt=10**9)

    def needs(self, lm, layers):
        sites = {hooks.site(self.layer, "mlp.out"), hooks.site(self.layer, "mlp.down_in")}  # the figure's
        return Needs(sites=sites, contributions={(self.layer, self.dim)})

    def check_model(self, lm, layers):
        _layer_exists(lm, self.layer)
        if self.dim >= lm.width:
            raise ValueError(f"dim {self.dim}: {lm.name}'s residual stream has {lm.width} dims (0-{lm.width - 1})")

    def figure(self, view, layers):
        return flow_panel(view, [self.layer])


@register
class TopNeurons(_Units):
    """The k intermediate units contributing most (|activation x weight|) to output `dim`, at each
    sequence's token where it peaks, averaged over sequences."""

    measure: Literal["top_neurons"] = "top_neurons"
    shape: ClassVar[str] = "set"

    def compute(self, view, layers):
        return [unit for unit, _ in stats.top_contributors(neuron_contributions(view, self.layer, self.dim), self.k)]


@register
class TopNeuronsShare(_Units):
    """What those k units' contributions add up to, as a share of the dim's output (less bias).
    Resampled by sequence, with each resample's own top k."""

    measure: Literal["top_neurons_share"] = "top_neurons_share"
    shape: ClassVar[str] = "value"

    def compute(self, view, layers):
        per_sequence = view.contributions(self.layer, self.dim).double()  # [S, F]
        value = float(stats.top_shares(per_sequence.mean(dim=0)[None], self.k)[0])
        weights = torch.from_numpy(view.bootstrap.weights(view.units()))  # [B, S], each row sums to S
        replicates = stats.top_shares(weights @ per_sequence / per_sequence.shape[0], self.k)  # [B]
        return Estimate(value, replicates.numpy(), view.units())


def _layer_exists(lm, layer: int) -> None:
    lm.check_layer(layer, f"layer {layer}")
