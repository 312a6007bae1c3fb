"""Spec files: YAML (safe_load with line numbers) -> frozen dataclasses, validated at collection.

A file holds one or more specs (YAML documents separated by ---). See specs/README.md."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import interventions
from .data import BUILTIN, DataConfig
from .errors import SpecError

# What each measure yields, which decides the keys and bounds that mean something on it:
#   layers: a number per layer         label_per_layer: a dim/token set per layer
#   value: one number                  set: one set of dims/tokens/units      label: one name
SHAPES = {
    "top1": "layers", "top2": "layers", "top3": "layers", "median": "layers", "ratio": "layers",
    "top1_dim": "label_per_layer", "top1_token": "label_per_layer",
    "dim_peak": "layers",  # max |a| of one residual dim over tokens, per layer
    "massive_dims": "set", "massive_tokens": "set",  # union over the layer range
    "emergence_layer": "value",  # first layer holding a massive activation
    "massive_elsewhere": "value",  # share of massive positions off the first token / first delimiter
    "head_score": "value", "head_rank": "value",
    "mlp_max": "layers", "mlp_median": "layers",  # per layer, inside the MLP
    "explosion_point": "label",  # MLP checkpoint where max |a| grows the most
    "top_neurons": "set",  # intermediate units contributing most to `dim`
    "top_neurons_share": "value",  # their contributions' share of the dim's output
    "loss": "value",  # mean next-token loss over real tokens
    "max_rel_diff": "layers",  # per layer max |x - y| / max |y| between two configs
}
# measure -> the keys it takes beyond measure/id/config (a key with no effect is an error)
MEASURE_KEYS = {
    "top1": {"statistic"}, "top2": {"statistic"}, "top3": {"statistic"}, "ratio": {"statistic"}, "median": set(),
    "top1_dim": {"statistic"}, "top1_token": {"statistic"}, "dim_peak": {"dim", "statistic"},
    "massive_dims": set(), "massive_tokens": set(), "emergence_layer": set(), "massive_elsewhere": set(),
    "head_score": {"head", "to"}, "head_rank": {"head", "to"},
    "mlp_max": {"checkpoint", "statistic"}, "mlp_median": {"checkpoint"}, "explosion_point": {"layer"},
    "top_neurons": {"layer", "dim", "k"}, "top_neurons_share": {"layer", "dim", "k"},
    "loss": set(), "max_rel_diff": {"versus", "site"},
}
MEASURES = set(SHAPES)
PER_LAYER = {m for m, shape in SHAPES.items() if shape in ("layers", "label_per_layer")}
NUMERIC = {m for m, shape in SHAPES.items() if shape in ("layers", "value")}
LAYERED = PER_LAYER | {"massive_dims", "massive_tokens", "emergence_layer", "massive_elsewhere"}  # take `layers`
USES_MASSIVE_RULE = {"massive_dims", "massive_tokens", "emergence_layer", "massive_elsewhere"}
# Two statistics for the layer-wise numbers (claims.md, "The statistic behind the numbers"):
#   paper: per sequence, the top-k of its flattened |a| (or its max in one dim), averaged over
#          sequences (Sun et al. 2024 and the seeds); the default
#   max_over_sequences: the k-th largest cell of the per-(token, dim) maximum over sequences
STATISTICS = ("paper", "max_over_sequences")
COMMON = {"id", "measure", "config", "layers", "change", "change_kind", "aggregate", "reduce"}
NUMERIC_BOUNDS = ("between", "min", "max", "approx")
SET_BOUNDS = ("subset_of", "contains", "not_contains")
BOUNDS = {*NUMERIC_BOUNDS, *SET_BOUNDS, "equals"}
AGGREGATES = ("mean", "max", "min", "mean_abs", "max_abs")
CHECKPOINTS = ("in", "up", "gate", "act", "down_in", "out", "resid")
SITES = ("out", "attn.out", "attn.resid", "attn.o_in", *(f"mlp.{c}" for c in CHECKPOINTS))  # max_rel_diff sites
TOP_KEYS = {"id", "claim", "source", "models", "data", "massive", "interventions", "checks", "xfail", "golden", "notes"}
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


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
    statistic: str = "paper"

    def configs(self) -> set[str]:
        """The configurations this quantity reads."""
        return {*(self.change or (self.config,)), *([self.versus] if self.versus else [])}

    @property
    def single(self) -> bool:
        """One value (not one per layer): a single-valued measure, or per-layer ones aggregated."""
        return self.measure not in PER_LAYER or bool(self.aggregate or self.reduce)

    def key(self) -> str:
        """A stable name built from what is measured (not from display text): golden keys."""
        parts = [self.measure]
        for name in ("statistic", "dim", "head", "to", "checkpoint", "layer", "k", "versus", "site"):
            value, default = getattr(self, name), Quantity.__dataclass_fields__[name].default
            if value != default and (name not in ("to", "k", "checkpoint", "site") or name in MEASURE_KEYS[self.measure]):
                parts.append(f"{name}={'.'.join(map(str, value)) if isinstance(value, tuple) else value}")
        if self.reduce:
            parts.append(f"reduce={self.reduce}")
        parts.append(f"{self.change_kind} change {self.change[0]}->{self.change[1]}" if self.change else f"[{self.config}]")
        if self.measure in LAYERED:
            parts.append(f"layers {self.layers or 'all'}")
        if self.aggregate:
            parts.append(f"aggregate={self.aggregate}")
        return " ".join(parts)


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
            "equals": lambda: f"== {_set_text(v) if isinstance(v, frozenset) else v}", "subset_of": lambda: f"⊆ {_set_text(v)}",
            "contains": lambda: f"⊇ {_set_text(v)}", "not_contains": lambda: f"∌ {_set_text(v)}",
            "ratio_min": lambda: f"|a| >= {v:g} x |b|",
        }[self.kind]()

    def sides(self) -> set[str]:
        """Which ways this bound constrains the value: "low", "high" (numbers) or "set"."""
        return {"between": {"low", "high"}, "approx": {"low", "high"}, "min": {"low"}, "max": {"high"},
                "ratio_min": {"low"}}.get(self.kind, {"set"})


def _set_text(values) -> str:
    return "{" + ", ".join(map(str, sorted(values))) + "}"


@dataclass(frozen=True)
class Check:
    quantity: Quantity
    bound: Bound
    line: int
    versus: Quantity | None = None  # compare checks: |quantity| >= ratio x |versus|
    id: str | None = None  # the spec's own name for it; else the key comes from the quantity

    def key(self) -> str:
        """Stable across rewording and reordering: what goldens and results key on."""
        if self.id:
            return self.id
        return self.quantity.key() + (f" vs {self.versus.key()}" if self.versus is not None else "")


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
    xfail: str | dict | None = None  # reason (every model), or {model: reason}
    golden: object = None  # golden.GoldenConfig when the spec compares against a snapshot
    source: str = ""
    notes: str = ""

    def xfail_for(self, model: str) -> str | None:
        """Why this claim is known false on `model`, if it is."""
        return self.xfail.get(model) if isinstance(self.xfail, dict) else self.xfail

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


MAX_SPEC_CHARS = 1_000_000  # far above any spec; keeps hostile files from taking the run down
MAX_KEYS = 1000


class _LineLoader(yaml.SafeLoader):
    """safe_load with line numbers; aliases (&a / *a) are refused: a spec never needs them and
    they are how a few lines expand into gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise SpecError(self.name, event.start_mark.line + 1, "", "YAML aliases (*name) are not allowed in specs")
        return super().compose_node(parent, index)


def _construct_mapping(loader, node):
    mapping = _Map()
    mapping.line, mapping.key_lines = node.start_mark.line + 1, {}
    if len(node.value) > MAX_KEYS:
        raise SpecError(loader.name, node.start_mark.line + 1, "", f"a mapping with {len(node.value)} keys")
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise SpecError(loader.name, key_node.start_mark.line + 1, "", "a key must be a plain name, not a list or mapping")
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
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(path, None, "", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(path, line, "", f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})") from None
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(path, None, "", f"the file has {len(text)} characters; a spec file is at most {MAX_SPEC_CHARS}")
    try:
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
    except RecursionError:
        raise SpecError(path, None, "", "nested too deeply to be a spec") from None
    for index, doc in enumerate(documents):
        if doc is not None and not isinstance(doc, dict):
            raise SpecError(path, None, "", f"document {index + 1} is a {type(doc).__name__}, not a mapping of spec keys")
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
    if not isinstance(doc["claim"], str) or not doc["claim"].strip():
        ctx.fail(doc, "claim", "must be the claim as a sentence (a non-empty string)")
    spec_id = doc.get("id") or Path(path).stem + (f"-{index}" if index else "")
    if not isinstance(spec_id, str) or not _NAME.match(spec_id):
        ctx.fail(doc, "id", "must be letters, digits, - and _")
    configs = _interventions(ctx, doc)
    checks = doc["checks"]
    if not isinstance(checks, list) or not checks:
        ctx.fail(doc, "checks", "must be a non-empty list")
    parsed = tuple(_check(ctx, c, i, set(configs) | {"baseline"}) for i, c in enumerate(checks))
    _unique_check_ids(ctx, checks, parsed)
    for key in ("notes", "source"):
        if key in doc and not (isinstance(doc[key], str) and doc[key].strip()):
            ctx.fail(doc, key, "must be a non-empty string")
    _xfail(ctx, doc)
    spec = Spec(
        id=spec_id, claim=str(doc["claim"]).strip(), path=path, line=doc.line, models=_models(ctx, doc),
        data=_data(ctx, doc), checks=parsed, interventions=configs, massive=_massive(ctx, doc),
        xfail=dict(doc["xfail"]) if isinstance(doc.get("xfail"), dict) else doc.get("xfail"), golden=_golden(ctx, doc), source=str(doc.get("source", "")),
        notes=str(doc.get("notes", "")).strip(),
    )
    if "massive" in doc and not _uses_massive_rule(spec):
        ctx.fail(doc, "massive", "no check or intervention of this spec applies the massive rule "
                                 f"({', '.join(sorted(USES_MASSIVE_RULE))}, dims:...#massive)")
    return spec


def _xfail(ctx: _Ctx, doc) -> None:
    """xfail: a reason (the claim is known false on every model) or {model: reason}."""
    if "xfail" not in doc:
        return
    raw = doc["xfail"]
    reasons = raw.values() if isinstance(raw, dict) else [raw]
    if not all(isinstance(r, str) and r.strip() for r in reasons) or (isinstance(raw, dict) and not raw):
        ctx.fail(doc, "xfail", "must be the reason the claim is known false (a non-empty string), or {model: reason}")
    if isinstance(raw, str) and doc.get("golden"):
        ctx.fail(doc, "golden", "an expected failure (xfail on every model) is not snapshotted: drop golden or xfail")


def _uses_massive_rule(spec: Spec) -> bool:
    return any(q.measure in USES_MASSIVE_RULE for q in spec.quantities()) or any(
        r.at_massive_cells for requests in spec.interventions.values() for r in requests)


def _unique_check_ids(ctx: _Ctx, raw_checks: list, parsed: tuple) -> None:
    seen = set()
    for raw, check in zip(raw_checks, parsed):
        if check.id is not None:
            if check.id in seen:
                ctx.fail(raw, "id", f"duplicate check id {check.id!r}")
            seen.add(check.id)


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
        if key in data and not (_is_int(data[key]) and 1 <= data[key] <= 100_000):
            ctx.fail(data, key, "must be an integer from 1 to 100000", "data.")
    if "dataset" in data and not (isinstance(data["dataset"], str) and data["dataset"]):
        ctx.fail(data, "dataset", "must be 'builtin' or a file path", "data.")
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
            if not _is_number(mapping[key]) or mapping[key] < 0:
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
        if not _is_number(massive[key]) or massive[key] <= 0:
            ctx.fail(massive, key, "must be a positive number", "massive.")
    return float(massive.get("min_value", 100.0)), float(massive.get("min_ratio", 1000.0))


def _interventions(ctx: _Ctx, doc) -> dict:
    configs = doc.get("interventions", {})
    if not isinstance(configs, dict):
        ctx.fail(doc, "interventions", "must map a configuration name to a list of interventions")
    parsed = {}
    for name, items in configs.items():
        if not isinstance(name, str) or not _NAME.match(name):
            ctx.fail(configs, name, "a configuration name is letters, digits, - and _", "interventions.")
        if name == "baseline":
            ctx.fail(configs, name, "'baseline' is reserved for the unmodified model", "interventions.")
        items = [items] if isinstance(items, str) else items
        if not isinstance(items, list) or not items or not all(isinstance(item, str) for item in items):
            ctx.fail(configs, name, "must be an intervention string or a list of them", "interventions.")
        try:
            parsed[name] = [interventions.parse(item) for item in items]
        except ValueError as exc:
            ctx.fail(configs, name, str(exc), "interventions.")
    return parsed


def _check(ctx: _Ctx, raw, index: int, configs: set[str]) -> Check:
    prefix = f"checks[{index}]."
    if not isinstance(raw, dict):
        raise SpecError(ctx.path, None, prefix.rstrip("."), "a check must be a mapping")
    check_id = raw.get("id")
    if check_id is not None and not (isinstance(check_id, str) and _NAME.match(check_id)):
        ctx.fail(raw, "id", "must be letters, digits, - and _", prefix)
    if "compare" in raw:
        ctx.only(raw, {"id", "compare", "ratio_min"}, prefix)
        pair = raw["compare"]
        ctx.only(pair, {"a", "b"}, prefix + "compare.")
        if "ratio_min" not in raw or set(pair) != {"a", "b"}:
            ctx.fail(raw, "compare", "needs compare: {a: ..., b: ...} and ratio_min", prefix)
        a = _quantity(ctx, pair["a"], prefix + "compare.a.", configs)
        b = _quantity(ctx, pair["b"], prefix + "compare.b.", configs)
        _comparable(ctx, pair, a, b, prefix + "compare.")
        return Check(a, Bound("ratio_min", _number(ctx, raw, "ratio_min", prefix)), raw.line, versus=b, id=check_id)
    quantity = _quantity(ctx, raw, prefix, configs, bounds=True)
    return Check(quantity, _bound(ctx, raw, prefix, quantity), raw.line, id=check_id)


def _comparable(ctx: _Ctx, pair, a: Quantity, b: Quantity, prefix: str) -> None:
    """|a| >= r |b| needs numbers on both sides, and one value each or the same layers each."""
    for side, q in (("a", a), ("b", b)):
        if q.measure not in NUMERIC:
            ctx.fail(pair, side, f"compare needs numbers; {q.measure} is not a number", prefix)
    if a.single != b.single or (not a.single and (a.layers or "all") != (b.layers or "all")):
        ctx.fail(pair, "a", "compare needs one value on each side (add aggregate over the layers) or the same "
                            "layers on both sides (compared layer by layer)", prefix)


def _quantity(ctx: _Ctx, raw, prefix: str, configs: set[str], bounds: bool = False) -> Quantity:
    if not isinstance(raw, dict) or "measure" not in raw:
        raise SpecError(ctx.path, getattr(raw, "line", None), prefix + "measure", "required key is missing")
    measure = raw["measure"]
    if not isinstance(measure, str) or measure not in MEASURES:
        ctx.fail(raw, "measure", f"unknown measure {measure!r}; allowed: {', '.join(sorted(MEASURES))}", prefix)
    ctx.only(raw, COMMON | MEASURE_KEYS[measure] | (BOUNDS | {"rel"} if bounds else set()), prefix)
    _only_where_meaningful(ctx, raw, measure, prefix)
    for key in ("config", "versus"):
        if key in raw and (not isinstance(raw[key], str) or raw[key] not in configs):
            ctx.fail(raw, key, f"unknown configuration {raw[key]!r}; defined: {', '.join(sorted(configs))}", prefix)
    change = raw.get("change")
    if change is not None:
        if not (isinstance(change, list) and len(change) == 2 and all(isinstance(c, str) and c in configs for c in change)):
            ctx.fail(raw, "change", f"must be [from, to] with configurations from: {', '.join(sorted(configs))}", prefix)
        change = tuple(change)
    choices = {"aggregate": AGGREGATES, "reduce": AGGREGATES, "change_kind": ("relative", "absolute"),
               "checkpoint": CHECKPOINTS, "to": ("first", "massive"), "statistic": STATISTICS}
    for key, allowed in choices.items():
        if key in raw and raw[key] not in allowed:
            ctx.fail(raw, key, f"must be one of {', '.join(allowed)}", prefix)
    needed = {"dim_peak": ("dim",), "top_neurons": ("dim", "layer"), "top_neurons_share": ("dim", "layer"),
              "head_score": ("head",), "head_rank": ("head",), "explosion_point": ("layer",), "max_rel_diff": ("versus",)}
    missing = [key for key in needed.get(measure, ()) if key not in raw]
    if missing:
        ctx.fail(raw, "measure", f"{measure} needs {' and '.join(missing)}", prefix)
    layers = raw.get("layers")
    if layers is not None:
        try:
            if isinstance(layers, bool) or not isinstance(layers, (int, str)):
                raise ValueError("must be 'all', an index, 'A-B' or 'A,B,C'")
            interventions.parse_layers(str(layers), None)  # syntax and order; the model's depth is checked later
        except ValueError as exc:
            ctx.fail(raw, "layers", str(exc), prefix)
    if "site" in raw and not (isinstance(raw["site"], str) and raw["site"] in SITES):
        ctx.fail(raw, "site", f"must be one of {', '.join(SITES)}", prefix)
    k = _opt_int(ctx, raw, "k", prefix)
    if k == 0:
        ctx.fail(raw, "k", "must be at least 1", prefix)
    return Quantity(
        measure=measure, config=raw.get("config", "baseline"), layers=None if layers in (None, "all") else str(layers),
        change=change, change_kind=raw.get("change_kind", "relative"), aggregate=raw.get("aggregate"), reduce=raw.get("reduce"),
        dim=_opt_int(ctx, raw, "dim", prefix), head=_head(ctx, raw, prefix), to=raw.get("to", "first"),
        checkpoint=raw.get("checkpoint", "out"), layer=_opt_int(ctx, raw, "layer", prefix),
        k=5 if k is None else k, versus=raw.get("versus"), site=str(raw.get("site", "out")),
        statistic=raw.get("statistic", "paper"),
    )


def _only_where_meaningful(ctx: _Ctx, raw, measure: str, prefix: str) -> None:
    """Reject keys that would have no effect on this quantity, rather than drop them."""
    shape = SHAPES[measure]
    rules = [
        ("layers", measure not in LAYERED, f"{measure} is not per layer (its layer comes from head/layer)"),
        ("config", "change" in raw, "with change: [from, to], the configurations come from change"),
        ("change", measure not in NUMERIC, f"{measure} is not a number; a change of it has no meaning"),
        ("change_kind", "change" not in raw, "only applies with change: [from, to]"),
        ("aggregate", shape != "layers", f"aggregates over layers; {measure} is not a number per layer"),
        ("reduce", shape != "layers", f"reduces over layers; {measure} is not a number per layer"),
        ("reduce", "aggregate" in raw, "after reduce there is one value per configuration: aggregate has nothing to do"),
        ("reduce", "change" not in raw, "reduce (before a change) needs change: [from, to]; without one use aggregate"),
    ]
    for key, bad, why in rules:
        if key in raw and bad:
            ctx.fail(raw, key, f"has no effect here: {why}", prefix)


def _head(ctx: _Ctx, raw, prefix: str) -> tuple[int, int] | None:
    if "head" not in raw:
        return None
    if not isinstance(raw["head"], str):  # YAML reads 5.10 as the float 5.1: head 1, not 10
        ctx.fail(raw, "head", "must be a quoted 'layer.head', e.g. \"5.10\"", prefix)
    layer, _, head = raw["head"].partition(".")
    if not (layer.isdigit() and head.isdigit()):
        ctx.fail(raw, "head", "must be 'layer.head', e.g. '5.1'", prefix)
    return int(layer), int(head)


def _opt_int(ctx: _Ctx, raw, key: str, prefix: str) -> int | None:
    if key in raw and not (_is_int(raw[key]) and 0 <= raw[key] < 10**9):
        ctx.fail(raw, key, "must be a non-negative integer (below 1e9)", prefix)
    return raw.get(key)


def _number(ctx: _Ctx, raw, key: str, prefix: str) -> float:
    if not _is_number(raw[key]):
        ctx.fail(raw, key, "must be a finite number", prefix)
    return float(raw[key])


def _bound(ctx: _Ctx, raw, prefix: str, quantity: Quantity) -> Bound:
    present = [k for k in (*NUMERIC_BOUNDS, "equals", *SET_BOUNDS) if k in raw]
    if sorted(present) == ["max", "min"]:  # min + max is the same as between
        present = ["between"]
        raw = _with_line(raw, {"between": [raw["min"], raw["max"]]})
    if len(present) != 1:
        ctx.fail(raw, "measure", f"needs exactly one bound: {', '.join([*NUMERIC_BOUNDS, 'equals', *SET_BOUNDS])}", prefix)
    kind = present[0]
    numeric = quantity.measure in NUMERIC
    if kind in NUMERIC_BOUNDS and not numeric:
        ctx.fail(raw, kind, f"{quantity.measure} is not a number; use equals or {', '.join(SET_BOUNDS)}", prefix)
    if kind in SET_BOUNDS and numeric:
        ctx.fail(raw, kind, f"{quantity.measure} is a number; use {', '.join(NUMERIC_BOUNDS)} or equals", prefix)
    if "rel" in raw and kind != "approx":
        ctx.fail(raw, "rel", "only applies to approx", prefix)
    value = raw[kind]
    if kind == "between":
        if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value) and value[0] <= value[1]):
            ctx.fail(raw, kind, "must be [low, high], two numbers with low <= high", prefix)
        value = (float(value[0]), float(value[1]))
    elif kind in ("min", "max", "approx"):
        value = _number(ctx, raw, kind, prefix)
    elif kind in SET_BOUNDS or (kind == "equals" and SHAPES[quantity.measure] == "set"):
        if not isinstance(value, list) or not all(_is_int(v) for v in value):
            ctx.fail(raw, kind, "must be a list of integers", prefix)
        value = frozenset(value)
    elif kind == "equals":
        value = _equals_value(ctx, raw, quantity, prefix)
    rel = _number(ctx, raw, "rel", prefix) if "rel" in raw else 0.1
    return Bound(kind, value, rel)


def _equals_value(ctx: _Ctx, raw, quantity: Quantity, prefix: str):
    value, shape = raw["equals"], SHAPES[quantity.measure]
    if shape == "label":
        if not isinstance(value, str):
            ctx.fail(raw, "equals", "must be a name", prefix)
        return value
    if shape == "label_per_layer" and isinstance(value, list):
        if not all(_is_int(v) for v in value):
            ctx.fail(raw, "equals", "must be an integer or a list of integers", prefix)
        return frozenset(value)
    if not _is_number(value):
        ctx.fail(raw, "equals", "must be a number", prefix)
    return value


def _is_int(value) -> bool:  # YAML's true/false are ints to Python; never to a spec
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _with_line(raw, extra: dict):
    mapping = _Map({**raw, **extra})
    mapping.line, mapping.key_lines = raw.line, {**raw.key_lines, **{k: raw.key_lines.get("min") for k in extra}}
    return mapping
