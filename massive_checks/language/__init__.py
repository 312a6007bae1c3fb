"""The spec language: what a spec file may write (schema.py, with the typed values of
definitions.py), how a file becomes Spec objects (loading.py, objects.py), the rules a schema
cannot say (rules.py) and the errors in the user's words (messages.py); the intervention grammar
(interventions.py) and the statistics a verdict reads (intervals.py).
`massive_checks.language.load_file` is the public loader.

The schema is built from the measures, which import definitions from this package, so a name is
imported at first use: `spec.definitions` loads without the rest (and nothing here loads torch)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from massive_checks.language.loading import load_file  # noqa: F401
    from massive_checks.language.objects import Bound, Check, Quantity, Spec  # noqa: F401
    from massive_checks.language.schema import json_schema  # noqa: F401

SUBMODULES = ("definitions", "interventions", "intervals", "schema", "objects", "loading", "rules", "messages")
PUBLIC = {  # name -> the module defining it
    "load_file": "loading",
    "Bound": "objects",
    "Check": "objects",
    "Quantity": "objects",
    "Spec": "objects",
    "json_schema": "schema",
}


def __getattr__(name: str) -> Any:
    """A submodule, or a public name, imported at first use."""
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
