"""A measure as a spec writes it: its name, its parameters (pydantic fields, validated at
collection), its shape and range (which keys and bounds mean something on it) and its words. The
spec language, the JSON Schema, goldens and reports read measures through REGISTRY; nothing else
lists them. How a measure computes its value from captures is measures/base.py's `Measure`, a
subclass; the language never runs one.

Shapes (what a measure yields; they decide the keys and bounds that mean something on it):
  layers           a number per layer          label_per_layer  a dim/token set per layer
  value            one number                  set              one set of dims/tokens/units
  label            one name

Measures join the registry by `register`: the built-in ones (massive_checks.measures) and a user's
own, from conftest.py or through an entry point of group `massive_checks.measures`, which
`registry()` loads at first use, as pytest loads its plugins.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from importlib import metadata
from typing import Any, ClassVar, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, create_model

ENTRY_POINTS = "massive_checks.measures"
Statistic = Literal["paper", "max_over_sequences", "cv_over_sequences"]
PerSequence = Literal["paper", "cv_over_sequences"]  # measures with a value per sequence and no extreme
STATISTICS = get_args(Statistic)
STATISTIC_TEXT = {  # how every layer-wise number is computed; written into results, goldens, figures
    "paper": "per sequence: top-k (and median) of its flattened |block output| over real tokens; "
    "then the mean over sequences (Sun et al. 2024); ratio = mean top-1 / mean median",
    "max_over_sequences": "top-k cells of the per-(token, dim) maximum of |a| over sequences",
    "cv_over_sequences": "the coefficient of variation (sample std / mean) of the per-sequence values "
    "over sequences: how constant the value is across inputs",
}
NUMERIC_SHAPES = ("layers", "value")
SET_SHAPES = ("set", "label_per_layer")  # set-valued: they take `count: true` (then a number, its size)
COUNTED = "the size of a set found on these sequences: exact on this data (a set's elements are decided by counterexamples)"
PER_LAYER_SHAPES = ("layers", "label_per_layer")
REGISTRY: dict[str, type[MeasureDef]] = {}
M = TypeVar("M", bound="MeasureDef")  # a measure class, as register returns it
_PARAM_ORDER = ("statistic", "dim", "head", "to", "checkpoint", "layer", "k", "versus", "site")  # golden keys: stable order


class MeasureDef(BaseModel):
    """A measure's part in the spec language. Subclasses (through measures.base.Measure) declare
    `measure: Literal["name"] = "name"`, their parameters as fields, and `shape`."""

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

    def model_post_init(self, context: Any) -> None:
        """`count: true` (a field the schema adds to set-valued measures) makes the measure its
        set's size: a number, per layer or one, that numeric bounds apply to."""
        if getattr(self, "count", False):
            counted = {"shape": "value" if self.shape == "set" else "layers", "value_range": (0.0, math.inf)}
            for name, value in counted.items():
                object.__setattr__(self, name, value)  # an instance's own, shadowing the class's

    def counted(self, value: Any) -> Any:
        """The set value (or {layer: set}) as its size, where `count: true`; else as it is."""
        if not getattr(self, "count", False):
            return value
        return {k: len(v) for k, v in value.items()} if isinstance(value, dict) else len(value)

    @property
    def name(self) -> str:
        return str(self.measure)  # type: ignore[attr-defined]  # every subclass declares it

    @property
    def numeric(self) -> bool:
        return self.shape in NUMERIC_SHAPES

    @property
    def per_layer(self) -> bool:
        return self.shape in PER_LAYER_SHAPES

    def text(self) -> str:
        """Its words in tables and failure messages."""
        params = self.params()
        return self.name + (f"({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")

    def params(self) -> dict[str, Any]:
        """Parameters that differ from their defaults (golden keys and descriptions)."""
        values = self.model_dump(exclude_defaults=True, exclude={"measure"})
        return dict(sorted(values.items(), key=lambda kv: (_PARAM_ORDER.index(kv[0]) if kv[0] in _PARAM_ORDER else 99, kv[0])))

    def vector_refs(self) -> set[str]:
        """Names of the spec's vectors it reads (checked against `vectors:` at collection)."""
        return set()

    def steering_refs(self) -> set[str]:
        """Names of the spec's steering configurations it reads (checked against `steering:`)."""
        return set()

    def contrast_needs(self, defined: Mapping[str, Any]) -> set[tuple[str, str]]:
        """(contrast set, window) pooled captures it reads, given the spec's vector definitions."""
        return {(defined[name].pairs, defined[name].window) for name in self.vector_refs() if name in defined}

    def configs(self) -> set[str]:
        """Configurations it reads besides the one it is measured on."""
        return set()

    def named_dims(self) -> set[int]:
        dim = getattr(self, "dim", None)
        return set() if dim is None else {dim}

    def no_interval(self) -> str:
        """Why this measure's numbers have no interval (\"\": they have one)."""
        return COUNTED if getattr(self, "count", False) and not self.fixed else self.fixed


def register(cls: type[M]) -> type[M]:
    """Class decorator: adds a measure to the spec language. A set-valued measure (SET_SHAPES)
    gains `count: bool = False` (its size as a number), as the class registered and returned."""
    name = cls.model_fields["measure"].default
    if name in REGISTRY:
        raise ValueError(f"measure {name!r} registered twice")
    if cls.shape in SET_SHAPES and "count" not in cls.model_fields:
        cls = create_model(cls.__name__, __base__=cls, __doc__=cls.__doc__, __module__=cls.__module__, count=(bool, False))
    REGISTRY[name] = cls
    return cls


def registry() -> dict[str, type[MeasureDef]]:
    """Every measure by name: the built-in ones and those of installed entry points, with any
    registered since."""
    _load_entry_points()
    return REGISTRY


@functools.cache  # once a process (scanning the installed packages costs ~5 ms; specs ask at every check)
def _load_entry_points() -> None:
    """Import every entry point of the group; a broken one raises, naming itself, at every call
    (a raising call is not cached), never leaving a registry without it."""
    for entry_point in metadata.entry_points(group=ENTRY_POINTS):
        try:
            entry_point.load()
        except Exception as exc:
            raise ImportError(f"measure plugin {entry_point.name!r} ({entry_point.value}) failed to load: {exc}") from exc
