"""What a spec writes under `golden:`: whether to snapshot, which keys, and their tolerance."""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field

from massive_checks.language.definitions import Frozen, Number

NonNegative = Annotated[Number, Field(ge=0)]


class Tolerance(Frozen):
    rtol: NonNegative = 1e-3  # relative: massive values are 1e2-1e5, fp16/bf16 runs need more (set per spec)
    atol: NonNegative = 1e-6


def _pairs(value: Any) -> Any:
    return tuple(value.items()) if isinstance(value, dict) else value


def _keys_default_as_written(schema: dict[str, Any]) -> None:
    schema["properties"]["keys"]["default"] = {}


class GoldenConfig(Tolerance):
    """A spec's `golden:` tolerances: rtol/atol for every key, `keys` per glob on the flat key."""

    model_config = ConfigDict(json_schema_extra=_keys_default_as_written)  # the YAML form's default

    # {glob: tolerance} in YAML, held as ((glob, tolerance), ...): the first match wins
    keys: Annotated[tuple[tuple[str, Tolerance], ...], BeforeValidator(_pairs, json_schema_input_type=dict[str, Tolerance])] = ()

    def tolerance(self, key: str) -> Tolerance:
        """The first matching glob's tolerance, else this config's own rtol and atol (it is one)."""
        return next((tol for pattern, tol in self.keys if fnmatch.fnmatchcase(key, pattern)), self)
