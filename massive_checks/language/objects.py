"""What a spec is parsed into: a Spec holds Checks; a Check bounds a Quantity (or compares two);
a Quantity is a measure on a configuration, then its steps. Built by loading.py, read by the
pipeline (evaluate.py) and keyed into goldens (Check.key)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from massive_checks.base.constants import ACROSS, MASSIVE_RULE
from massive_checks.language.data import DataConfig
from massive_checks.language.interventions import EVERY_LAYER, LayerSet
from massive_checks.language.measure import MeasureDef
from massive_checks.language.schema import Step
from massive_checks.language.tolerance import GoldenConfig


@dataclass(frozen=True)
class Quantity:
    """What is observed: a measure on a configuration, then its steps in order."""

    measure: MeasureDef
    config: str = "baseline"
    layers: LayerSet | None = None  # None: every layer
    steps: tuple[Step, ...] = ()
    model: str | None = None  # a compare side's own model (a --model value); None: the item's model

    @property
    def layers_text(self) -> str:
        return (self.layers or EVERY_LAYER).text

    def blocks(self, n_layers: int) -> list[int]:
        """The blocks this quantity reads on a model with n_layers blocks."""
        return (self.layers or EVERY_LAYER).blocks(n_layers)

    @property
    def between_configs(self) -> Step | None:
        return next((s for s in self.steps if s.kind in ("change", "difference")), None)

    def configs(self) -> set[str]:
        """The configurations this quantity reads."""
        step = self.between_configs
        return {*(step.value if step else (self.config,)), *self.measure.configs()}

    @property
    def single(self) -> bool:
        """One value (not one per layer): a single-valued measure, or reduced over layers."""
        return not self.measure.per_layer or any(s.kind == "over_layers" for s in self.steps)

    @property
    def numeric(self) -> bool:
        return self.measure.numeric

    def key(self) -> str:
        """A stable name built from what is measured (not from display text): golden keys.
        Steps before a change come first, then the change (or [config]), the layers, the rest."""
        parts = [self.measure.name, *(f"{k}={v}" for k, v in self.measure.params().items())]
        between = self.between_configs
        at = self.steps.index(between) if between else len(self.steps)
        parts += [s.text() for s in self.steps[:at]]
        parts.append(between.text() if between else f"[{self.config}]")
        if self.measure.layered:
            parts.append(f"layers {self.layers_text}")
        return " ".join(parts + [s.text() for s in self.steps[at + 1 :]] + ([f"@ {self.model}"] if self.model else []))

    def describe(self) -> str:
        text = (f"{self.model}: " if self.model else "") + self.measure.text()
        text += f" [{self.config}]" if not self.between_configs else ""
        text += f", layers {self.layers_text}" if self.measure.layered else ""
        return text + "".join(f", then {s.text()}" for s in self.steps)


@dataclass(frozen=True)
class Bound:
    kind: str  # at_least | at_most | between | approx | equals | subset_of | contains | excludes
    value: Any  # a number, [low, high], a label or a frozenset (by kind)
    rel: float = 0.1  # approx only

    def text(self) -> str:
        v = self.value
        return {
            "between": lambda: f"in [{v[0]:g}, {v[1]:g}]",
            "at_least": lambda: f">= {v:g}",
            "at_most": lambda: f"<= {v:g}",
            "approx": lambda: f"{v:g} ± {self.rel:.0%}",
            "equals": lambda: f"== {_set_text(v) if isinstance(v, frozenset) else v}",
            "subset_of": lambda: f"⊆ {_set_text(v)}",
            "contains": lambda: f"⊇ {_set_text(v)}",
            "excludes": lambda: f"∌ {_set_text(v)}",
        }[self.kind]()

    def sides(self) -> set[str]:
        """Which ways this bound constrains the value: "low", "high" (numbers) or "set"."""
        return {"between": {"low", "high"}, "approx": {"low", "high"}, "at_least": {"low"}, "at_most": {"high"}}.get(
            self.kind, {"set"}
        )

    def holds(self, value: Any) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        kind, target = self.kind, self.value
        if kind == "between":
            return bool(target[0] <= value <= target[1])
        if kind == "at_least":
            return bool(value >= target)
        if kind == "at_most":
            return bool(value <= target)
        if kind == "approx":
            return bool(abs(value - target) <= self.rel * abs(target))
        items = frozenset(value) if isinstance(value, (list, set, frozenset)) else frozenset([value])
        if kind == "equals":
            if isinstance(value, (list, set, frozenset)):  # a set equals a set, or one element
                return items == (target if isinstance(target, frozenset) else frozenset([target]))
            return bool(value == target)
        if kind == "subset_of":
            return bool(items <= target)
        if kind == "contains":
            return bool(target <= items)
        return not (target & items)  # excludes


def _set_text(values: Any) -> str:
    return "{" + ", ".join(map(str, sorted(values))) + "}"


@dataclass(frozen=True)
class Check:
    quantity: Quantity
    bound: Bound
    line: int
    versus: Quantity | None = None  # compare checks: the bound applies to |a| / |b| or a - b
    by: str = "ratio"
    id: str | None = None  # the spec's own name for it; else the key comes from the quantity
    reference: str | None = None  # the source's value for it, shown in reports (never judged)

    def key(self) -> str:
        """Stable across rewording and reordering: what goldens and results key on."""
        if self.id:
            return self.id
        if self.versus is None:
            return self.quantity.key()
        return f"{self.quantity.key()} {self.by} vs {self.versus.key()}"


@dataclass(frozen=True)
class Spec:
    id: str
    claim: str
    path: str
    line: int
    models: tuple[str, ...] | None  # None: any model
    data: DataConfig
    checks: tuple[Check, ...]
    interventions: dict[str, Any] = field(default_factory=dict, hash=False)  # name -> [Request]
    vectors: dict[str, Any] = field(default_factory=dict, hash=False)  # name -> steering.vectors.VectorDef
    steering: dict[str, Any] = field(default_factory=dict, hash=False)  # name -> definitions.SteeringDef
    massive: tuple[float, float] = MASSIVE_RULE  # (min |a|, min ratio to the median)
    xfail: str | dict[str, str] | None = None  # reason (every model), or {model: reason}
    inconclusive: str | dict[str, str] | None = None  # reason (every model), or {model: reason}
    claims: tuple[str, ...] = ()
    kind: str = "claim"  # claim (tests a source's claim) | measured (bounds from this model's numbers)
    golden: GoldenConfig | None = None  # when the spec compares against a snapshot
    source: str = ""
    notes: str = ""

    def xfail_for(self, model: str) -> str | None:
        """Why this claim is known false on `model`, if it is."""
        return self.xfail.get(model) if isinstance(self.xfail, dict) else self.xfail

    def inconclusive_for(self, model: str) -> str | None:
        """Why this claim cannot be decided on `model` at this size, if it cannot."""
        return self.inconclusive.get(model) if isinstance(self.inconclusive, dict) else self.inconclusive

    def applies_to(self, model: str) -> bool:
        return self.models is None or model in self.models  # a spec across models: (its label,)

    @property
    def across(self) -> tuple[str, ...]:
        """The models a check across models reads (its compare sides' `model:`), in order of
        appearance; () for a spec that runs on each model by itself."""
        return tuple(dict.fromkeys(q.model for q in self.quantities() if q.model))

    @property
    def label(self) -> str:
        """What a spec across models is run and recorded as: its models joined by "+"."""
        return ACROSS.join(self.across)

    def configs(self, model: str | None = None) -> set[str]:
        return set().union(*(q.configs() for q in self.quantities(model)))

    def quantities(self, model: str | None = None) -> list[Quantity]:
        """Every quantity its checks read; with `model`, of a spec across models, those on that model."""
        every = [q for check in self.checks for q in (check.quantity, check.versus) if q is not None]
        return [q for q in every if q.model == model] if model is not None and self.across else every

    def steering_refs(self, model: str | None = None) -> set[str]:
        """The steering configurations its checks read (of a spec across models, on `model`)."""
        return {name for q in self.quantities(model) for name in q.measure.steering_refs()}

    def generates_text(self) -> bool:
        """Whether it reads a steering configuration: text generated and judged, most of the
        suite's time (the plugin marks its items `massive_generates`)."""
        return bool(self.steering_refs())

    def named_dims(self) -> set[int]:
        """Residual dims the spec names (parameters, bounds on dim-valued measures, dim
        interventions), to check against a model's width before running."""
        dims = set().union(*(q.measure.named_dims() for q in self.quantities()))
        for check in self.checks:
            if check.quantity.measure.dims_in_bound:
                value = check.bound.value
                dims.update(value if isinstance(value, frozenset) else [value] if isinstance(value, int) else [])
        for definition in self.vectors.values():
            dims.update((definition.clean.dims if definition.clean else None) or ())
        for requests in self.interventions.values():
            for r in requests:
                if r.target == "dims":
                    dims.update(int(d) for d in r.selection.split(",") if d.strip().isdigit())
        return dims
