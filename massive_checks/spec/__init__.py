"""The spec language: the YAML schema and its loader (language.py), the definitions a spec is
parsed into (definitions.py), the intervention grammar (interventions.py) and the statistics a
verdict reads (intervals.py). `massive_checks.spec.load_file` is the public loader.

The loader imports the measures, which import definitions from this package, so it is imported
at first use of a name it defines: `spec.definitions` loads without it (and without torch)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .language import Bound, Check, Quantity, Spec, json_schema, load_file  # noqa: F401

SUBMODULES = ("language", "definitions", "interventions", "intervals")


def __getattr__(name: str) -> Any:
    """A submodule, or a name the loader (language.py) defines, imported at first use."""
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    try:
        return getattr(importlib.import_module(f"{__name__}.language"), name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
