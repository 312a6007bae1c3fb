"""Spec files: YAML (safe_load with line numbers) -> frozen dataclasses, validated at collection.

A file holds one or more specs (YAML documents separated by ---). See specs/README.md."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import interventions
from .data import BUILTIN, DataConfig
from .errors import SpecError

# measure -> extra keys it accepts (beyond the common ones)
PER_LAYER = {"top1", "top2", "top3", "median", "ratio", "top1_dim", "top1_token", "dim_peak", "mlp_max",
             "mlp_median", "max_rel_diff"}
MEASURES = {
    "top1": set(), "top2": set(), "top3": set(), "median": set(), "ratio": set(),
    "top1_dim": set(), "top1_token": set(),
    "dim_peak": {"dim"},  # max |a| of one residual dim over tokens, per layer
    "massive_dims": set(), "massive_tokens": set(),  # union over the layer range
    "emergence_layer": set(),  # first layer holding a massive activation
    "head_score": {"head", "to"}, "head_rank": {"head", "to"},
    "mlp_max": {"checkpoint"}, "mlp_median": {"checkpoint"},  # per layer, inside the MLP
    "explosion_point": {"layer"},  # MLP checkpoint where max |a| grows the most
    "top_neurons": {"layer", "dim", "k"},  # intermediate units contributing most to `dim`
    "loss": set(),  # mean next-token loss over real tokens
    "max_rel_diff": {"versus", "site"},  # per layer max |x - y| / max |y| between two configs
}
COMMON = {"measure", "config", "layers", "change", "change_kind", "aggregate", "reduce"}
BOUNDS = {"between", "min", "max", "approx", "rel", "equals", "subset_of", "contains", "not_contains"}
AGGREGATES = ("mean", "max", "min", "mean_abs", "max_abs")
CHECKPOINTS = ("in", "up", "gate", "act", "down_in", "out")
TOP_KEYS = {"id", "claim", "source", "models", "data", "massive", "interventions", "checks", "xfail", "golden", "notes"}


@dataclass(frozen=True)
class Quantity:
    """What is observed: a measure on a configuration, optionally as a change and aggregated."""

    measure: str
    config: str = "baseline"
    layers: str | None = None  # None: every layer
    change: tuple[str, str] | None = None  # (from_config, to_config)
    change_kind: str = "relative"  # relative: (to - from) / |from|; absolute: to - from
    aggregate: str | None = None  # over layers, after the change
    reduce: str | None = None  # over layers, per configuration, before the change ("the peak")
    dim: int | None = None
    head: tuple[int, int] | None = None
    to: str = "first"  # head scores: attention to position 0 ("first") or the massive token
    checkpoint: str = "out"
    layer: int | None = None
    k: int = 5
    versus: str | None = None
    site: str = "out"

    def configs(self) -> set[str]:
        """The configurations this quantity reads."""
        return {self.config, *(self.change or ()), *([self.versus] if self.versus else [])}


@dataclass(frozen=True)
class Bound:
    kind: str  # between | min | max | approx | equals | subset_of | contains | not_contains | ratio_min
    value: object
    rel: float = 0.1  # approx only

    def text(self) -> str:
        v = self.value
        return {
            "between": lambda: f"in [{v[0]:g}, {v[1]:g}]", "min": lambda: f">= {v:g}",
            "max": lambda: f"<= {v:g}", "approx": lambda: f"{v:g} ± {self.rel:.0%}",
            "equals": lambda: f"== {v}", "subset_of": lambda: f"⊆ {sorted(v)}",
            "contains": lambda: f"⊇ {sorted(v)}", "not_contains": lambda: f"∌ {sorted(v)}",
            "ratio_min": lambda: f"|a| >= {v:g} x |b|",
        }[self.kind]()


@dataclass(frozen=True)
class Check:
    quantity: Quantity
    bound: Bound
    line: int
    versus: Quantity | None = None  # compare checks: |quantity| >= ratio x |versus|


@dataclass(frozen=True)
class Spec:
    id: str
    claim: str
    path: str
    line: int
    models: tuple[str, ...] | None  # None: any model
    data: DataConfig
    checks: tuple[Check, ...]
    interventions: dict = field(default_factory=dict, hash=False)  # name -> [Request]
    massive: tuple[float, float] = (100.0, 1000.0)  # (min |a|, min ratio to the median)
    xfail: str | None = None
    golden: object = None  # golden.GoldenConfig when the spec compares against a snapshot
    source: str = ""

    def applies_to(self, model: str) -> bool:
        return self.models is None or model in self.models

    def configs(self) -> set[str]:
        return set().union(*(q.configs() for q in self.quantities()))

    def quantities(self) -> list[Quantity]:
        return [q for check in self.checks for q in (check.quantity, check.versus) if q is not None]

    def named_dims(self) -> set[int]:
        """Residual dims the spec names (selectors, bounds on dim-valued measures, dim
        interventions), to check against a model's width before running."""
        dims = {q.dim for q in self.quantities() if q.dim is not None}
        for check in self.checks:
            if check.quantity.measure in ("massive_dims", "top1_dim"):
                value = check.bound.value
                dims.update(value if isinstance(value, frozenset) else [value] if isinstance(value, int) else [])
        for requests in self.interventions.values():
            for r in requests:
                if r.target == "dims":
                    dims.update(int(d) for d in r.selection.split(",") if d.strip().isdigit())
        return dims

    def named_heads(self) -> set[tuple[int, int]]:
        return {q.head for q in self.quantities() if q.head is not None}


# --------------------------------------------------------------------------- YAML with lines


class _Map(dict):
    """A mapping that remembers the line of each key (1-based)."""

    line: int = 0
    key_lines: dict


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node):
    mapping = _Map()
    mapping.line, mapping.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise SpecError(loader.name, key_node.start_mark.line + 1, str(key), "duplicate key")
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off as booleans, which turns
# a configuration named `off` into False.
_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _LineLoader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")))


def load_file(path: str | Path) -> list[Spec]:
    path = str(path)
    try:
        text = Path(path).read_text("utf-8")
        loader = _LineLoader(text)
        loader.name = path
        documents = []
        try:
            while loader.check_data():
                documents.append(loader.get_data())
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(path, mark.line + 1 if mark else None, "", f"invalid YAML: {getattr(exc, 'problem', exc)}") from None
    specs = [_spec(path, doc, index) for index, doc in enumerate(documents) if doc is not None]
    ids = [s.id for s in specs]
    for spec in specs:
        if ids.count(spec.id) > 1:
            raise SpecError(path, spec.line, "id", f"duplicate spec id {spec.id!r}")
    return specs


# --------------------------------------------------------------------------- validation


class _Ctx:
    """Raises SpecError pointing at a key of a mapping."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, mapping, key, message: str, prefix: str = ""):
        line = getattr(mapping, "key_lines", {}).get(key, getattr(mapping, "line", None))
        raise SpecError(self.path, line, prefix + str(key), message)

    def only(self, mapping, allowed: set[str], prefix: str = ""):
        if not isinstance(mapping, dict):
            raise SpecError(self.path, None, prefix.rstrip("."), "expected a mapping")
        for key in mapping:
            if key not in allowed:
                self.fail(mapping, str(key), f"unknown key; allowed: {', '.join(sorted(allowed))}", prefix)


def _spec(path: str, doc, index: int) -> Spec:
    ctx = _Ctx(path)
    ctx.only(doc, TOP_KEYS)
    for key in ("claim", "checks"):
        if key not in doc:
            raise SpecError(path, doc.line, key, "required key is missing")
    spec_id = doc.get("id") or Path(path).stem + (f"-{index}" if index else "")
    if not isinstance(spec_id, str) or not spec_id.replace("-", "").replace("_", "").isalnum():
        ctx.fail(doc, "id", "must be letters, digits, - and _")
    configs = _interventions(ctx, doc)
    checks = doc["checks"]
    if not isinstance(checks, list) or not checks:
        ctx.fail(doc, "checks", "must be a non-empty list")
    parsed = tuple(_check(ctx, c, i, set(configs) | {"baseline"}) for i, c in enumerate(checks))
    massive = _massive(ctx, doc)
    return Spec(
        id=spec_id, claim=str(doc["claim"]).strip(), path=path, line=doc.line, models=_models(ctx, doc),
        data=_data(ctx, doc), checks=parsed, interventions=configs, massive=massive,
        xfail=doc.get("xfail"), golden=_golden(ctx, doc), source=str(doc.get("source", "")),
    )


def _models(ctx: _Ctx, doc) -> tuple[str, ...] | None:
    models = doc.get("models", "any")
    if models == "any":
        return None
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        ctx.fail(doc, "models", "must be 'any' or a list of model names")
    return tuple(models)


def _data(ctx: _Ctx, doc) -> DataConfig:
    data = doc.get("data", {})
    ctx.only(data, {"samples", "seq_len", "dataset"}, "data.")
    for key in ("samples", "seq_len"):
        if key in data and (not isinstance(data[key], int) or data[key] < 1):
            ctx.fail(data, key, "must be a positive integer", "data.")
    defaults = DataConfig()
    return DataConfig(str(data.get("dataset", BUILTIN)), data.get("samples", defaults.samples),
                      data.get("seq_len", defaults.seq_len))


def _golden(ctx: _Ctx, doc):
    """golden: true | {rtol: 1e-3, atol: 1e-6, keys: {"*median*": {rtol: 0.01}}}"""
    from .golden import GoldenConfig, Tolerance

    raw = doc.get("golden", False)
    if raw is False or raw is None:
        return None
    if raw is True:
        return GoldenConfig()
    ctx.only(raw, {"rtol", "atol", "keys"}, "golden.")

    def tolerance(mapping, prefix) -> Tolerance:
        ctx.only(mapping, {"rtol", "atol"}, prefix)
        for key in mapping:
            if not isinstance(mapping[key], (int, float)) or mapping[key] < 0:
                ctx.fail(mapping, key, "must be a non-negative number", prefix)
        return Tolerance(float(mapping.get("rtol", Tolerance.rtol)), float(mapping.get("atol", Tolerance.atol)))

    keys = raw.get("keys", {})
    ctx.only(keys, set(keys), "golden.keys.")
    return GoldenConfig(tolerance({k: v for k, v in raw.items() if k != "keys"}, "golden."),
                        tuple((str(k), tolerance(v, f"golden.keys.{k}.")) for k, v in keys.items()))


def _massive(ctx: _Ctx, doc) -> tuple[float, float]:
    massive = doc.get("massive", {})
    ctx.only(massive, {"min_value", "min_ratio"}, "massive.")
    for key in massive:
        if not isinstance(massive[key], (int, float)) or massive[key] <= 0:
            ctx.fail(massive, key, "must be a positive number", "massive.")
    return float(massive.get("min_value", 100.0)), float(massive.get("min_ratio", 1000.0))


def _interventions(ctx: _Ctx, doc) -> dict:
    configs = doc.get("interventions", {})
    if not isinstance(configs, dict):
        ctx.fail(doc, "interventions", "must map a configuration name to a list of interventions")
    parsed = {}
    for name, items in configs.items():
        if name == "baseline":
            ctx.fail(configs, name, "'baseline' is reserved for the unmodified model", "interventions.")
        items = [items] if isinstance(items, str) else items
        if not isinstance(items, list) or not items:
            ctx.fail(configs, name, "must be an intervention string or a list of them", "interventions.")
        try:
            parsed[name] = [interventions.parse(str(item)) for item in items]
        except ValueError as exc:
            ctx.fail(configs, name, str(exc), "interventions.")
    return parsed


def _check(ctx: _Ctx, raw, index: int, configs: set[str]) -> Check:
    prefix = f"checks[{index}]."
    if isinstance(raw, dict) and "compare" in raw:
        ctx.only(raw, {"compare", "ratio_min"}, prefix)
        pair = raw["compare"]
        ctx.only(pair, {"a", "b"}, prefix + "compare.")
        if "ratio_min" not in raw or set(pair) != {"a", "b"}:
            ctx.fail(raw, "compare", "needs compare: {a: ..., b: ...} and ratio_min", prefix)
        a = _quantity(ctx, pair["a"], prefix + "compare.a.", configs)
        b = _quantity(ctx, pair["b"], prefix + "compare.b.", configs)
        return Check(a, Bound("ratio_min", _number(ctx, raw, "ratio_min", prefix)), raw.line, versus=b)
    quantity = _quantity(ctx, raw, prefix, configs, bounds=True)
    return Check(quantity, _bound(ctx, raw, prefix, quantity), raw.line)


def _quantity(ctx: _Ctx, raw, prefix: str, configs: set[str], bounds: bool = False) -> Quantity:
    if not isinstance(raw, dict) or "measure" not in raw:
        raise SpecError(ctx.path, getattr(raw, "line", None), prefix + "measure", "required key is missing")
    measure = raw["measure"]
    if measure not in MEASURES:
        ctx.fail(raw, "measure", f"unknown measure {measure!r}; allowed: {', '.join(sorted(MEASURES))}", prefix)
    ctx.only(raw, COMMON | MEASURES[measure] | (BOUNDS if bounds else set()), prefix)
    for key in ("config", "versus"):
        if key in raw and raw[key] not in configs:
            ctx.fail(raw, key, f"unknown configuration {raw[key]!r}; defined: {', '.join(sorted(configs))}", prefix)
    change = raw.get("change")
    if change is not None:
        if not (isinstance(change, list) and len(change) == 2 and all(c in configs for c in change)):
            ctx.fail(raw, "change", f"must be [from, to] with configurations from: {', '.join(sorted(configs))}", prefix)
        change = tuple(change)
    for key in ("aggregate", "reduce"):
        if raw.get(key) not in (None, *AGGREGATES):
            ctx.fail(raw, key, f"must be one of {', '.join(AGGREGATES)}", prefix)
    if raw.get("change_kind", "relative") not in ("relative", "absolute"):
        ctx.fail(raw, "change_kind", "must be relative or absolute", prefix)
    if raw.get("checkpoint", "out") not in CHECKPOINTS:
        ctx.fail(raw, "checkpoint", f"must be one of {', '.join(CHECKPOINTS)}", prefix)
    if raw.get("to", "first") not in ("first", "massive"):
        ctx.fail(raw, "to", "must be first (position 0) or massive (the detected massive token)", prefix)
    if measure == "dim_peak" and "dim" not in raw or measure in ("top_neurons",) and not {"dim", "layer"} <= set(raw):
        ctx.fail(raw, "measure", f"{measure} needs {'dim' if measure == 'dim_peak' else 'dim and layer'}", prefix)
    if measure in ("head_score", "head_rank") and "head" not in raw:
        ctx.fail(raw, "measure", f"{measure} needs head: 'L.H'", prefix)
    if measure == "explosion_point" and "layer" not in raw:
        ctx.fail(raw, "measure", "explosion_point needs layer", prefix)
    if measure == "max_rel_diff" and "versus" not in raw:
        ctx.fail(raw, "measure", "max_rel_diff needs versus: <configuration>", prefix)
    layers = raw.get("layers")
    if layers is not None and not isinstance(layers, (int, str)):
        ctx.fail(raw, "layers", "must be 'all', an index, 'A-B' or 'A,B,C'", prefix)
    return Quantity(
        measure=measure, config=raw.get("config", "baseline"), layers=None if layers in (None, "all") else str(layers),
        change=change, change_kind=raw.get("change_kind", "relative"), aggregate=raw.get("aggregate"), reduce=raw.get("reduce"),
        dim=_opt_int(ctx, raw, "dim", prefix), head=_head(ctx, raw, prefix), to=raw.get("to", "first"),
        checkpoint=raw.get("checkpoint", "out"), layer=_opt_int(ctx, raw, "layer", prefix),
        k=_opt_int(ctx, raw, "k", prefix) or 5, versus=raw.get("versus"), site=str(raw.get("site", "out")),
    )


def _head(ctx: _Ctx, raw, prefix: str) -> tuple[int, int] | None:
    if "head" not in raw:
        return None
    layer, _, head = str(raw["head"]).partition(".")
    if not (layer.isdigit() and head.isdigit()):
        ctx.fail(raw, "head", "must be 'layer.head', e.g. '5.1'", prefix)
    return int(layer), int(head)


def _opt_int(ctx: _Ctx, raw, key: str, prefix: str) -> int | None:
    if key in raw and (not isinstance(raw[key], int) or raw[key] < 0):
        ctx.fail(raw, key, "must be a non-negative integer", prefix)
    return raw.get(key)


def _number(ctx: _Ctx, raw, key: str, prefix: str) -> float:
    if not isinstance(raw[key], (int, float)) or isinstance(raw[key], bool):
        ctx.fail(raw, key, "must be a number", prefix)
    return float(raw[key])


def _bound(ctx: _Ctx, raw, prefix: str, quantity: Quantity) -> Bound:
    present = [k for k in ("between", "min", "max", "approx", "equals", "subset_of", "contains", "not_contains") if k in raw]
    if sorted(present) == ["max", "min"]:  # min + max is the same as between
        present = ["between"]
        raw = {**raw, "between": [raw["min"], raw["max"]]}
    if len(present) != 1:
        ctx.fail(raw, "measure", "needs exactly one bound: between, min, max, approx, equals, subset_of, contains or not_contains", prefix)
    kind = present[0]
    value = raw[kind]
    if kind == "between" and not (isinstance(value, list) and len(value) == 2 and value[0] <= value[1]):
        ctx.fail(raw, kind, "must be [low, high] with low <= high", prefix)
    if kind in ("subset_of", "contains", "not_contains"):
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            ctx.fail(raw, kind, "must be a list of integers", prefix)
        value = frozenset(value)
    if kind in ("min", "max", "approx"):
        value = _number(ctx, raw, kind, prefix)
    if kind == "between":
        value = (float(value[0]), float(value[1]))
    if "rel" in raw and kind != "approx":
        ctx.fail(raw, "rel", "only applies to approx", prefix)
    if kind == "equals" and isinstance(value, list):
        value = frozenset(value)
    return Bound(kind, value, float(raw.get("rel", 0.1)))
