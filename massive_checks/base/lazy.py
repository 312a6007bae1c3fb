"""Modules imported at their first use, so that the spec language (language/schema.py and the measure
classes it reads) loads without torch: `load_file`, the JSON Schema and the pytest plugin's
collection start in a fraction of a second, and the engine is imported only when a pass runs.

    if TYPE_CHECKING:
        import torch
    else:
        torch = LazyModule("torch")

Type checkers see the real module; at run time the first attribute read imports it."""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands for `import <name>` until an attribute is read; every read is the module's own."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported at first use>"
