"""A measure is one registered class: its language part (parameters, shape, range, words:
language/measure.py's MeasureDef) and, here, what it needs captured, how it computes its value
from a configuration's captures, and the figure panels and texts it contributes."""

from __future__ import annotations

from typing import Any, ClassVar

from massive_checks.engine.needs import Needs
from massive_checks.language.measure import (  # noqa: F401  (re-exported: a measure's module needs no other)
    NUMERIC_SHAPES,
    PER_LAYER_SHAPES,
    REGISTRY,
    STATISTICS,
    MeasureDef,
    Statistic,
    register,
)


class Measure(MeasureDef):
    """Base of every measure. Subclasses declare `measure: Literal["name"] = "name"`, their
    parameters as fields, `shape`, and `compute`."""

    def needs(self, lm, layers: list[int]) -> Needs:
        """Captures beyond the block outputs (always captured, with medians)."""
        return Needs()

    def compute(self, view, layers: list[int]) -> Any:
        """Its value on one configuration (session.ConfigView): {layer: value} for per-layer
        shapes, else one value."""
        raise NotImplementedError

    def figure(self, view, layers: list[int]) -> list:
        """Its figure panels (panels.Panel), from captures the pass already holds ([]: none)."""
        return []

    def samples(self, view) -> dict:
        """Texts it generated, shown in reports ({}: none): {steering name: {coef: [text, ..]}}."""
        return {}

    def check_model(self, lm, layers: list[int]) -> None:
        """Raise ValueError for what the model does not have (heads, dims, layers past its size)."""

    def forced_by(self, other: MeasureDef, view, layers: list[int]) -> dict[int, tuple[float, float, str]]:
        """Per layer, the range [low, high] this measure's value cannot leave on this model once
        `other`'s value (same configuration and layer) is known, and why: e.g. an activation's
        maximum given its input's, which |f(x)| <= |x| confines. {} where nothing confines it. A
        compare of the two whose bound holds over that whole range cannot fail here
        (pipeline/evaluate.py: inconclusive, "cannot leave its bound")."""
        return {}


class PerLayer(Measure):
    """A number per layer; subclasses define `at(view, layer)`."""

    shape: ClassVar[str] = "layers"
    layered: ClassVar[bool] = True

    def compute(self, view, layers: list[int]) -> dict[int, Any]:
        return {layer: self.at(view, layer) for layer in layers}

    def at(self, view, layer: int):
        raise NotImplementedError


def computed(measure: MeasureDef) -> Measure:
    """A spec's measure as one that computes: every built-in measure does; a class that defines only
    the language part (MeasureDef) cannot run, and says so."""
    if not isinstance(measure, Measure):
        raise TypeError(
            f"measure {measure.name!r} ({type(measure).__name__}) subclasses MeasureDef, not massive_checks.api.Measure"
        )
    return measure
