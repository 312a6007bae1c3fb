"""A measure is one registered class: its parameters (pydantic fields, validated at collection),
what it needs captured, how it computes its value from a configuration's captures, the words it
renders, and the figure panel it contributes. The spec language, the JSON Schema, planning,
evaluation, goldens and figures all read measures from REGISTRY; nothing else lists them.

Shapes (what a measure yields; they decide the keys and bounds that mean something on it):
  layers           a number per layer          label_per_layer  a dim/token set per layer
  value            one number                  set              one set of dims/tokens/units
  label            one name
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Mapping, get_args

from pydantic import BaseModel, ConfigDict

from ..spec.definitions import Needs

Statistic = Literal["paper", "max_over_sequences"]
STATISTICS = get_args(Statistic)
NUMERIC_SHAPES = ("layers", "value")
PER_LAYER_SHAPES = ("layers", "label_per_layer")
REGISTRY: dict[str, type["Measure"]] = {}
_PARAM_ORDER = ("statistic", "dim", "head", "to", "checkpoint", "layer", "k", "versus", "site")  # golden keys: stable order


class Measure(BaseModel):
    """Base of every measure. Subclasses declare `measure: Literal["name"] = "name"`, their
    parameters as fields, `shape`, and `compute`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    shape: ClassVar[str]
    layered: ClassVar[bool] = False  # takes `layers` (per layer, or a set / value over a range)
    uses_massive_rule: ClassVar[bool] = False  # reads the spec's `massive:` parameters
    dims_in_bound: ClassVar[bool] = False  # its values are residual dims (checked against the width)
    labels: ClassVar[tuple[str, ...]] = ()  # label measures: the names it can take
    # The values it can take: a bound admitting all of them cannot fail (a collection error).
    value_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    # Numeric measures return intervals.Estimate (a value with bootstrap replicates over its
    # sampling units) unless this says why they have none: then the value is exact.
    fixed: ClassVar[str] = ""

    @property
    def name(self) -> str:
        return self.measure  # type: ignore[attr-defined]

    @property
    def numeric(self) -> bool:
        return self.shape in NUMERIC_SHAPES

    @property
    def per_layer(self) -> bool:
        return self.shape in PER_LAYER_SHAPES

    # -- what each measure defines
    def needs(self, lm, layers: list[int]) -> Needs:
        """Captures beyond the block outputs (always captured, with medians)."""
        return Needs()

    def compute(self, view, layers: list[int]) -> Any:
        """Its value on one configuration (session.ConfigView): {layer: value} for per-layer
        shapes, else one value."""
        raise NotImplementedError

    def text(self) -> str:
        """Its words in tables and failure messages."""
        params = self.params()
        return self.name + (f"({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")

    def figure(self, view, layers: list[int]) -> list:
        """Its figure panels (panels.Panel), from captures the pass already holds ([]: none)."""
        return []

    def samples(self, view) -> dict:
        """Texts it generated, shown in reports ({}: none): {steering name: {coef: [text, ..]}}."""
        return {}

    def no_interval(self) -> str:
        """Why this measure's numbers have no interval ("": they have one)."""
        return self.fixed

    def check_model(self, lm, layers: list[int]) -> None:
        """Raise ValueError for what the model does not have (heads, dims, layers past its size)."""

    # -- derived
    def params(self) -> dict:
        """Parameters that differ from their defaults (golden keys and descriptions)."""
        values = self.model_dump(exclude_defaults=True, exclude={"measure"})
        return dict(sorted(values.items(), key=lambda kv: (_PARAM_ORDER.index(kv[0]) if kv[0] in _PARAM_ORDER else 99, kv[0])))

    def vector_refs(self) -> set[str]:
        """Names of the spec's vectors it reads (checked against `vectors:` at collection)."""
        return set()

    def steering_refs(self) -> set[str]:
        """Names of the spec's steering configurations it reads (checked against `steering:`)."""
        return set()

    def contrast_needs(self, defined: Mapping) -> set[tuple[str, str]]:
        """(contrast set, window) pooled captures it reads, given the spec's vector definitions."""
        return {(defined[name].pairs, defined[name].window) for name in self.vector_refs() if name in defined}

    def configs(self) -> set[str]:
        """Configurations it reads besides the one it is measured on."""
        return set()

    def named_dims(self) -> set[int]:
        dim = getattr(self, "dim", None)
        return set() if dim is None else {dim}


def register(cls: type[Measure]) -> type[Measure]:
    """Class decorator: adds a measure to the spec language."""
    name = cls.model_fields["measure"].default
    if name in REGISTRY:
        raise ValueError(f"measure {name!r} registered twice")
    REGISTRY[name] = cls
    return cls


class PerLayer(Measure):
    """A number per layer; subclasses define `at(view, layer)`."""

    shape: ClassVar[str] = "layers"
    layered: ClassVar[bool] = True

    def compute(self, view, layers: list[int]) -> dict[int, Any]:
        return {layer: self.at(view, layer) for layer in layers}

    def at(self, view, layer: int):
        raise NotImplementedError
