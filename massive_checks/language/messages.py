"""Schema errors -> SpecError at the file, line and key they are about, in the user's words: the
one error that explains a failed validation (pydantic reports one per union alternative), and
messages that say what is allowed there."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from massive_checks.base.errors import SpecError
from massive_checks.language.data import DataConfig
from massive_checks.language.definitions import SteeringDef, Sweep, Trait
from massive_checks.language.measure import registry
from massive_checks.language.schema import BOUNDS, MassiveModel, for_registry
from massive_checks.language.tolerance import GoldenConfig
from massive_checks.language.vector_defs import Cleaning, VectorDef


def validate(model: type[BaseModel], doc: Any, path: str, origins: dict[str, Any]) -> Any:
    """The model's instance of a document (its fields read by name), or a SpecError: `origins`
    says which top-level keys came from a `_defaults.yaml` (their errors point there)."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise _spec_error(_most_specific(list(map(dict, exc.errors())), doc), doc, path, origins) from None


def _most_specific(errors: list[dict[str, Any]], doc: Any) -> dict[str, Any]:
    """The error to report: an unknown key first (it explains the others), else the one reaching
    deepest into the document (a union reports one error per alternative; the deepest is the
    alternative the user wrote)."""

    def depth(error: dict[str, Any]) -> int:
        node, found = doc, 0
        for part in error["loc"]:
            if (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and part < len(node)
            ):
                node, found = node[part], found + 1
        return found

    # among equally deep ones, the alternative of the type the user wrote (a too-long layers string
    # is a string error, not "should be a valid integer")
    def wrote_a(e: dict[str, Any]) -> bool:
        return not e["type"].startswith(("int_", "float_", "bool_")) or not isinstance(e.get("input"), str)

    return max(errors, key=lambda e: (e["type"] == "extra_forbidden", depth(e), wrote_a(e)))


WHY_NOT_HERE = {  # keys a measure's schema lacks, and why (a key with no effect is an error, never dropped)
    "layers": "{m} is not per layer (its layer comes from head/layer)",
    "over_layers": "over_layers reduces a number per layer; {m} is not one",
    "change": "{m} is not a number; a change of it has no meaning",
    "difference": "{m} is not a number; a difference of it has no meaning",
    "steps": "{m} is not a number; it has no steps",
    "statistic": "{m} has one statistic",
}


def _spec_error(error: dict[str, Any], doc: Any, path: str, origins: dict[str, Any]) -> SpecError:
    """A pydantic error -> SpecError at the file, line and key it is about (a key filled from a
    `_defaults.yaml` points there)."""
    loc, mapping = list(error["loc"]), doc
    parts: list[str] = []
    if loc and loc[0] in origins:
        path, mapping = origins[loc[0]].path, origins[loc[0]].mapping
    holder, key, line = mapping, None, getattr(mapping, "line", None)
    for part in loc:
        if isinstance(mapping, dict) and part in mapping:
            holder, key, mapping = mapping, part, mapping[part]
            line = holder.key_lines.get(part, line) if hasattr(holder, "key_lines") else line
            parts.append(f".{part}" if parts else str(part))
        elif isinstance(mapping, list) and isinstance(part, int) and part < len(mapping):
            holder, key, mapping = mapping, part, mapping[part]
            line = getattr(mapping, "line", line)
            parts.append(f"[{part}]")
        # else: a union tag or a type name in the location; not a key of the document
    kind = error["type"]
    if kind == "missing" and isinstance(loc[-1], str):
        parts.append(f".{loc[-1]}" if parts else loc[-1])
    if kind.startswith("union_tag") and isinstance(mapping, dict) and "measure" in mapping:
        parts.append(".measure")
        line = getattr(mapping, "key_lines", {}).get("measure", line)
    return SpecError(path, line, "".join(parts), _message(error, holder, key, mapping, loc))


def _message(error: dict[str, Any], holder: Any, key: Any, value: Any, loc: list[Any]) -> str:
    kind = error["type"]
    measure = holder.get("measure") if isinstance(holder, dict) else None
    if kind == "extra_forbidden":
        if key == "by" and isinstance(holder, dict) and "compare" in holder:
            return "by goes inside compare: compare: {a: ..., b: ..., by: ratio | difference}"
        if measure in registry():
            fields = (for_registry().sides if "compare" in loc else for_registry().checks)[measure].model_fields
            if key in BOUNDS:
                return f"{key} does not apply to {measure}; its bounds: {', '.join(b for b in BOUNDS if b in fields)}"
            if key in WHY_NOT_HERE:
                return "has no effect here: " + WHY_NOT_HERE[key].format(m=measure)
            return f"unknown key for {measure}; its keys: {', '.join(sorted(fields))}"
        model: Any = (
            {
                "data": DataConfig,
                "massive": MassiveModel,
                "golden": GoldenConfig,
                "vectors": Cleaning if "clean" in loc else VectorDef,
                "steering": Sweep if "sweep" in loc else Trait if "trait" in loc else SteeringDef,
            }.get(loc[0])
            if len(loc) > 1
            else for_registry().spec
        )
        return f"unknown key; allowed: {', '.join(sorted(model.model_fields))}" if model else "unknown key"
    if kind.startswith("union_tag"):
        names = ", ".join(sorted(registry()))
        if not (isinstance(value, dict) and "measure" in value):
            return f"a check needs measure: (one of {names}) or compare:"
        return f"unknown measure {value['measure']!r}; allowed: {names}"
    if kind == "missing":
        parent = value if isinstance(value, dict) else holder
        needer = parent.get("measure") if isinstance(parent, dict) else None
        return f"{needer} needs {loc[-1]}" if needer in registry() else "required key is missing"
    if key == "head" and kind == "string_type":  # YAML reads 5.10 as the float 5.1: head 1, not 10
        return "must be a quoted 'layer.head', e.g. \"5.10\""
    if kind in ("int_type", "float_type") and isinstance(value, bool):
        return "must be a number, not true/false"
    if kind == "literal_error":
        return f"must be one of {error['ctx']['expected']}"
    if kind in ("too_short", "too_long"):  # a YAML list held as a tuple is a list to the user
        return str(error["msg"]).replace("Tuple should", "List should")
    return str(error["msg"])
