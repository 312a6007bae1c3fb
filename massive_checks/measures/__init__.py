"""Measures, one registered class each (base.py says what a measure defines). Importing this
package registers every built-in measure; REGISTRY maps a name to its class."""

from massive_checks.measures import (  # noqa: F401  (registration)
    attention,
    heads,
    loss,
    massive,
    mlp,
    norms,
    outliers,
    profile,
    sites,
    steering,
    sweeps,
)
from massive_checks.measures.base import REGISTRY, STATISTICS, Measure, PerLayer, register

__all__ = ["REGISTRY", "STATISTICS", "Measure", "PerLayer", "register"]
