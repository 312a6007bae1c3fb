"""Spec files -> Spec objects, validated at collection: the schema (schema.py) validates a
document into typed values, this module assembles them into a Spec, and rules.py checks what a
schema cannot say. Every error is a SpecError naming file, line and key (messages.py).

A directory may hold `_defaults.yaml` (schema.DEFAULT_KEYS: models, data, massive, golden,
vectors, steering): defaults for the specs below it; the nearest one wins, a spec's own keys win
over all. See specs/README.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from massive_checks.base.constants import ACROSS, DEFAULTS_FILE
from massive_checks.base.errors import SpecError
from massive_checks.base.yaml_lines import read_documents
from massive_checks.language import interventions, rules
from massive_checks.language.measure import MeasureDef, registry
from massive_checks.language.messages import validate
from massive_checks.language.objects import Bound, Check, Quantity, Spec
from massive_checks.language.rules import Where
from massive_checks.language.schema import (
    BOUNDS,
    DEFAULT_KEYS,
    NUMBER_BOUNDS,
    SET_BOUNDS,
    STEP_KINDS,
    DefaultsModel,
    Step,
    for_registry,
)
from massive_checks.language.tolerance import GoldenConfig


def load_file(path: str | Path) -> list[Spec]:
    """The specs of one file (a `_defaults.yaml` is validated and holds none)."""
    path = str(path)
    if Path(path).name == DEFAULTS_FILE:
        _read_defaults(Path(path))
        return []
    defaults = _defaults_for(Path(path))
    documents = read_documents(path)
    specs = [_spec(path, doc, index, defaults) for index, doc in enumerate(documents) if doc is not None]
    if not specs:  # an empty file must not pass for a spec file whose claims all hold
        raise SpecError(path, 1, "", "holds no spec (a spec file has at least one document with a claim and checks)")
    ids = [s.id for s in specs]
    for spec in specs:
        if ids.count(spec.id) > 1:
            raise SpecError(path, spec.line, "id", f"duplicate spec id {spec.id!r}")
    return specs


@dataclass(frozen=True)
class _Origin:
    """Where a value came from: its file and the mapping holding it (for lines)."""

    path: str
    mapping: Any


def _defaults_for(path: Path) -> dict[str, tuple[Any, _Origin]]:
    """key -> (value, origin) from the `_defaults.yaml` files of the spec's directory and its
    parents up to the nearest `specs` directory (only its own directory when it is under none);
    the nearest file wins."""
    directory = path.resolve().parent
    chain = [directory, *directory.parents]
    top = next((i for i, folder in enumerate(chain) if folder.name == "specs"), 0)
    merged: dict[str, tuple[Any, _Origin]] = {}
    for folder in chain[: top + 1]:
        if (folder / DEFAULTS_FILE).is_file():
            for key, value in _read_defaults(folder / DEFAULTS_FILE).items():
                merged.setdefault(key, value)
    return merged


def _read_defaults(path: Path) -> dict[str, tuple[Any, _Origin]]:
    documents = [d for d in read_documents(path) if d is not None]
    if len(documents) != 1:
        raise SpecError(str(path), None, "", f"a defaults file holds one mapping of {', '.join(DEFAULT_KEYS)}")
    doc = documents[0]
    validate(DefaultsModel, doc, str(path), {})
    return {key: (value, _Origin(str(path), doc)) for key, value in doc.items()}


def _spec(path: str, doc: Any, index: int, defaults: dict[str, Any]) -> Spec:
    own = dict(doc)
    merged = type(doc)({**{k: v for k, (v, _) in defaults.items() if k not in doc}, **own})
    merged.line, merged.key_lines = doc.line, dict(doc.key_lines)
    origins = {k: origin for k, (_, origin) in defaults.items() if k not in doc}
    model = validate(for_registry().spec, merged, path, origins)
    where = Where(path, doc)
    configs = _interventions(model, where)
    _vectors(model, merged, where, origins)
    _steering(model, merged, where, origins)
    checks = tuple(
        _check(raw, parsed, f"checks[{i}].", _Defined(set(configs) | {"baseline"}, model.vectors, model.steering), where)
        for i, (raw, parsed) in enumerate(zip(doc["checks"], model.checks))
    )
    used, used_sweeps = rules.used_definitions(checks, model.steering)
    across = rules.across_models(checks, doc, merged, where)
    spec = Spec(
        id=model.id or Path(path).stem + (f"-{index}" if index else ""),
        claim=model.claim,
        path=path,
        line=doc.line,
        models=(ACROSS.join(across),)
        if across
        else None
        if model.models == "any"
        else tuple([model.models] if isinstance(model.models, str) else model.models),
        data=model.data,
        checks=checks,
        interventions=configs,
        vectors={n: v for n, v in model.vectors.items() if n in used},
        steering={n: v for n, v in model.steering.items() if n in used_sweeps},
        massive=(model.massive.min_value, model.massive.min_ratio),
        xfail=dict(model.xfail) if isinstance(model.xfail, dict) else model.xfail,
        inconclusive=dict(model.inconclusive) if isinstance(model.inconclusive, dict) else model.inconclusive,
        claims=tuple(model.claims),
        kind=model.kind,
        golden=_golden(model.golden),
        source=model.source,
        notes=model.notes.strip(),
    )
    rules.spec_rules(spec, model, doc, merged, where)
    return spec


def _golden(written: bool | GoldenConfig) -> GoldenConfig | None:
    if written is True:
        return GoldenConfig()
    return written or None


def _interventions(model: Any, where: Where) -> dict[str, Any]:
    raw = where.doc.get("interventions", {})
    parsed = {}
    for name, items in model.interventions.items():
        if name == "baseline":
            where.fail(raw, name, "'baseline' is reserved for the unmodified model", "interventions.")
        try:
            parsed[name] = [interventions.parse(item) for item in ([items] if isinstance(items, str) else items)]
        except ValueError as exc:
            where.fail(raw, name, str(exc), "interventions.")
    return parsed


def _definitions_at(key: str, merged: Any, where: Where, origins: dict[str, Any]) -> tuple[Any, Where]:
    """The raw mapping of `vectors:` or `steering:` and where its errors point (a `_defaults.yaml`
    when it came from one)."""
    at = Where(origins[key].path, origins[key].mapping) if key in origins else where
    return merged.get(key, {}), at


def _vectors(model: Any, merged: Any, where: Where, origins: dict[str, Any]) -> None:
    """A contrast file a vector names exists and reads (an error here, not at the first pass)."""
    raw, at = _definitions_at("vectors", merged, where, origins)
    for name, v in model.vectors.items():
        rules.readable_pairs(at, raw[name], v.pairs, f"vectors.{name}.")


def _steering(model: Any, merged: Any, where: Where, origins: dict[str, Any]) -> None:
    raw, at = _definitions_at("steering", merged, where, origins)
    for name, s in model.steering.items():
        rules.steering_rules(s, raw[name], at, f"steering.{name}.", model.vectors)


@dataclass(frozen=True)
class _Defined:
    """The names a spec defines that its checks may refer to."""

    configs: set[str]  # configurations, baseline included
    vectors: Mapping[str, Any]  # name -> VectorDef
    sweeps: Mapping[str, Any]  # name -> SteeringDef


def _check(raw: Any, parsed: Any, prefix: str, defined: _Defined, where: Where) -> Check:
    bound = _bound(raw, parsed, prefix, where)
    if hasattr(parsed, "compare"):
        pair, raw_pair = parsed.compare, raw["compare"]
        a = _quantity(raw_pair["a"], pair.a, prefix + "compare.a.", defined, where)
        b = _quantity(raw_pair["b"], pair.b, prefix + "compare.b.", defined, where)
        rules.comparable(raw_pair, a, b, prefix + "compare.", where)
        return Check(a, bound, raw.line, versus=b, by=pair.by, id=parsed.id, reference=parsed.reference)
    return Check(_quantity(raw, parsed, prefix, defined, where), bound, raw.line, id=parsed.id, reference=parsed.reference)


def _measure_of(parsed: Any) -> MeasureDef:
    cls = registry()[parsed.measure]
    return cls(**{name: getattr(parsed, name) for name in cls.model_fields})


def _quantity(raw: Any, parsed: Any, prefix: str, defined: _Defined, where: Where) -> Quantity:
    steps = _steps(raw, parsed, prefix, where)
    measure = _measure_of(parsed)
    rules.quantity_rules(raw, measure, prefix, where, defined.vectors, defined.sweeps)
    configs = defined.configs
    if hasattr(parsed, "pairs"):
        rules.readable_pairs(where, raw, parsed.pairs, prefix)
    for key in ("config", "versus"):
        if key in raw and getattr(parsed, key) not in configs:
            where.fail(raw, key, f"unknown configuration {raw[key]!r}; defined: {', '.join(sorted(configs))}", prefix)
    for step in steps:
        if step.kind != "over_layers" and not set(step.value) <= configs:
            key = step.kind if step.kind in raw else "steps"
            where.fail(raw, key, f"{step.value} names an unknown configuration; defined: {', '.join(sorted(configs))}", prefix)
    if "config" in raw and any(s.kind != "over_layers" for s in steps):
        where.fail(raw, "config", "has no effect here: with a change or difference, the configurations come from it", prefix)
    written = getattr(parsed, "layers", None)
    layers = None
    if written is not None:
        try:
            layers = interventions.LayerSet.parse(str(written))  # syntax and order; the model's depth is checked later
        except ValueError as exc:
            where.fail(raw, "layers", str(exc), prefix)
    span = None if layers is None or layers.spans is None else layers
    return Quantity(measure, parsed.config, span, steps, getattr(parsed, "model", None))


def _steps(raw: Any, parsed: Any, prefix: str, where: Where) -> tuple[Step, ...]:
    """Top-level change / difference / over_layers (one of them), or `steps:` in order."""
    short = [k for k in STEP_KINDS if getattr(parsed, k, None) is not None]
    written = getattr(parsed, "steps", None)
    if written is not None and short:
        where.fail(raw, short[0], "write every step inside steps: [...] (they apply in that order)", prefix)
    if len(short) > 1:
        where.fail(
            raw,
            short[1],
            f"two steps ({' and '.join(short)}): write them as steps: [...] in the order they "
            f"apply, e.g. steps: [{{{short[0]}: ...}}, {{{short[1]}: ...}}]",
            prefix,
        )
    steps = [Step.model_validate({k: getattr(parsed, k)}) for k in short]
    for i, step in enumerate(written or []):
        if sum(getattr(step, k) is not None for k in STEP_KINDS) != 1:
            where.fail(raw, "steps", f"step {i + 1} must be one of change, difference, over_layers", prefix)
        steps.append(step)
    kinds = [s.kind for s in steps]
    if sum(k != "over_layers" for k in kinds) > 1 or kinds.count("over_layers") > 1:
        where.fail(raw, "steps", "at most one change (or difference) and one over_layers", prefix)
    per_layer = parsed.shape == "layers"  # the check's own: count: true makes a per-layer set a number per layer
    if "over_layers" in kinds and not per_layer:
        where.fail(
            raw, "steps", f"has no effect here: over_layers reduces a number per layer; {parsed.measure} is not one", prefix
        )
    if written is not None and not written:
        where.fail(raw, "steps", "an empty list of steps has no effect", prefix)
    return tuple(steps)


def _bound(raw: Any, parsed: Any, prefix: str, where: Where) -> Bound:
    present = [k for k in BOUNDS if getattr(parsed, k, None) is not None]
    if len(present) != 1:
        key = present[1] if present else ("compare" if "compare" in raw else "measure")
        where.fail(raw, key, f"needs exactly one bound: {', '.join(k for k in BOUNDS if hasattr(parsed, k))}", prefix)
    kind = present[0]
    value = getattr(parsed, kind)
    set_bound = kind in SET_BOUNDS or (kind == "equals" and isinstance(value, list))
    if hasattr(parsed, "count") and (set_bound if parsed.count else kind in NUMBER_BOUNDS):
        where.fail(
            raw,
            kind,
            "bounds a number: write count: true to bound the set's size"
            if not parsed.count
            else "bounds a set, but count: true makes it a number (its size): use at_least, at_most, between or approx",
            prefix,
        )
    if getattr(parsed, "rel", None) is not None and kind != "approx":
        where.fail(raw, "rel", "has no effect here: rel only applies to approx", prefix)
    if kind == "between":
        if value[0] > value[1]:
            where.fail(raw, kind, "must be [low, high] with low <= high", prefix)
        value = (float(value[0]), float(value[1]))
    elif kind in ("at_least", "at_most", "approx"):
        value = float(value)
    elif isinstance(value, list):
        value = frozenset(value)
    return Bound(kind, value, getattr(parsed, "rel", None) or 0.1)
