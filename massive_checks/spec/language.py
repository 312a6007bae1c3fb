"""Spec files -> Spec objects, validated at collection.

Two layers: a schema (pydantic models, built from the measure registry; the same schema is exported
as JSON Schema for editors) checks keys, types and allowed values; then the rules a schema cannot
say (configuration names exist, exactly one bound, the order of steps, what `compare` can compare)
are checked here. Every error is a SpecError naming file, line and key.

A directory may hold `_defaults.yaml` (DEFAULT_KEYS: models, data, massive, golden, vectors,
steering): defaults for the specs below it; the nearest one wins, a spec's own keys win over all.
See specs/README.md."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet as Set
from typing import Annotated, Any, Literal, Mapping, NoReturn, Optional, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, ValidationError, create_model

from ..steering import contrast, judges, vectors
from . import definitions, interventions
from .definitions import Window
from ..constants import DEFAULTS_FILE
from ..engine.data import BUILTIN, DataConfig
from ..errors import MassiveChecksError, SpecError
from ..output.golden import GoldenConfig, Tolerance
from ..measures import REGISTRY, Measure
from ..measures.base import NUMERIC_SHAPES
from ..yaml_lines import read_documents

DEFAULT_KEYS = ("models", "data", "massive", "golden", "vectors", "steering")
NUMBER_BOUNDS = ("at_least", "at_most", "between", "approx")
SET_BOUNDS = ("subset_of", "contains", "excludes")
BOUNDS = (*NUMBER_BOUNDS, "equals", *SET_BOUNDS)

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", max_length=200)]
ModelName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_.@/-]+$", max_length=300)
]  # as given to --model (hub ids have a /)
Text = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
Number = float  # strict: ints and floats, finite, never booleans
Layers = Union[Annotated[int, Field(ge=0)], Annotated[str, StringConstraints(max_length=1000)]]
OverLayers = Literal["mean", "max", "min", "mean_abs", "max_abs"]
ConfigPair = Annotated[list[Name], Field(min_length=2, max_length=2)]  # [from, to]
Interval = Annotated[list[Number], Field(min_length=2, max_length=2)]  # [low, high]
ClaimId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", max_length=50)]  # e.g. C7


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class DataModel(_Strict):
    dataset: Annotated[str, StringConstraints(min_length=1)] = BUILTIN  # "builtin" or a file path
    samples: Annotated[int, Field(ge=1, le=100_000)] = 16
    seq_len: Annotated[int, Field(ge=1, le=100_000)] = 128


class MassiveModel(_Strict):
    """The paper's rule: |a| > min_value and |a| >= min_ratio x the sequence's median."""

    min_value: Annotated[Number, Field(gt=0)] = 100.0
    min_ratio: Annotated[Number, Field(gt=0)] = 1000.0


class ToleranceModel(_Strict):
    rtol: Annotated[Number, Field(ge=0)] = Tolerance.rtol
    atol: Annotated[Number, Field(ge=0)] = Tolerance.atol


class GoldenModel(ToleranceModel):
    keys: dict[str, ToleranceModel] = {}  # glob on the flat key -> its tolerance


class StepModel(_Strict):
    """One step of a quantity, in order: a change between two configurations, or a reduction over
    the layer range."""

    change: Optional[ConfigPair] = None  # relative: (to - from) / |from|
    difference: Optional[ConfigPair] = None  # to - from
    over_layers: Optional[OverLayers] = None


def _quantity_fields(cls: type[Measure]) -> dict[str, Any]:
    fields: dict[str, Any] = {"config": (Name, "baseline")}
    if cls.layered:
        fields["layers"] = (Optional[Layers], None)
    if cls.shape in NUMERIC_SHAPES:
        fields["change"] = (Optional[ConfigPair], None)
        fields["difference"] = (Optional[ConfigPair], None)
        fields["steps"] = (Optional[list[StepModel]], None)
    if cls.shape == "layers":
        fields["over_layers"] = (Optional[OverLayers], None)
    return fields


# The bounds on a number (a measure's, or a compare's |a| / |b| or a - b), with approx's `rel`.
NUMBER_BOUND_FIELDS: dict[str, Any] = {
    "at_least": (Optional[Number], None),
    "at_most": (Optional[Number], None),
    "between": (Optional[Interval], None),
    "approx": (Optional[Number], None),
    "rel": (Optional[Annotated[Number, Field(gt=0)]], None),
}


def _bound_fields(cls: type[Measure]) -> dict[str, Any]:
    ints = list[Annotated[int, Field(ge=0)]]
    if cls.shape in NUMERIC_SHAPES:
        return {**NUMBER_BOUND_FIELDS, "equals": (Optional[Number], None)}
    if cls.shape == "label":
        return {"equals": (Optional[Literal[cls.labels]] if cls.labels else Optional[str], None)}
    equals = ints if cls.shape == "set" else Union[Annotated[int, Field(ge=0)], ints]
    return {"equals": (Optional[equals], None), **{kind: (Optional[ints], None) for kind in SET_BOUNDS}}


@dataclass(frozen=True)
class Schema:
    """The spec schema for the measures registered now: per measure, the flat model of a check
    (parameters, quantity keys, bounds) and of a compare side (no bounds); the spec model."""

    checks: Mapping[str, type[BaseModel]]
    sides: Mapping[str, type[BaseModel]]
    spec: type[BaseModel]


_SCHEMAS: dict[tuple[tuple[str, type[Measure]], ...], Schema] = {}


def schema() -> Schema:
    """Built from REGISTRY once per set of registered measures (a measure registered later, e.g.
    by a plugin or a test, is in the next schema)."""
    key = tuple(REGISTRY.items())
    if key not in _SCHEMAS:
        _SCHEMAS.clear()
        _SCHEMAS[key] = _build_schema()
    return _SCHEMAS[key]


# A check's `reference`: the source's own value for what the check measures (e.g. "+33.0 - +24.8 on
# Gemma 3 4B"), shown beside the models' values in the reports' reference table; never judged.
REFERENCE_FIELD: Any = (Optional[Annotated[str, StringConstraints(min_length=1, max_length=300)]], None)


def _build_schema() -> Schema:
    checks, sides = {}, {}
    for name, cls in REGISTRY.items():
        base = _quantity_fields(cls)
        sides[name] = create_model(f"{cls.__name__}Quantity", __base__=cls, __doc__=cls.__doc__, **base)
        checks[name] = create_model(
            f"{cls.__name__}Check",
            __base__=cls,
            __doc__=cls.__doc__,
            id=(Optional[Name], None),
            reference=REFERENCE_FIELD,
            **base,
            **_bound_fields(cls),
        )
    side_field: Any = _union(sides)
    by_field: Any = (Literal["ratio", "difference"], "ratio")
    pair = create_model(
        "ComparePair", __base__=_Strict, a=(side_field, ...), b=(side_field, ...), by=by_field
    )  # |a| / |b|, or a - b
    compare = create_model(
        "CompareCheck",
        __base__=_Strict,
        __doc__=COMPARE_DOC,
        id=(Optional[Name], None),
        reference=REFERENCE_FIELD,
        compare=(pair, ...),
        **NUMBER_BOUND_FIELDS,
    )
    check_field: Any = _union(checks, {"compare": compare})
    spec = create_model(
        "SpecModel",
        __base__=_SpecBase,
        __doc__=_SpecBase.__doc__,
        checks=(Annotated[list[check_field], Field(min_length=1)], ...),
    )
    return Schema(checks, sides, spec)


def _measure_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        if "compare" in value:
            return "compare"
        return value.get("measure") if isinstance(value.get("measure"), str) else None
    return None


def _union(models: Mapping[str, type[BaseModel]], extra: Mapping[str, type[BaseModel]] | None = None) -> Any:
    tagged = [Annotated[model, Tag(name)] for name, model in {**models, **(extra or {})}.items()]
    return Annotated[Union[tuple(tagged)], Discriminator(_measure_tag)]


COMPARE_DOC = "A bound on how two quantities compare: |a| / |b| (by: ratio) or a - b (by: difference)."


class CleanModel(_Strict):
    """Zero these dims (then renormalise): a list, or the top-k dims by mean |activation|."""

    dims: Optional[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]] = None
    top: Optional[Annotated[int, Field(ge=1)]] = None


class VectorModel(_Strict):
    """A steering vector: a contrast set's pooled block outputs at one layer, and a method."""

    pairs: Annotated[str, StringConstraints(min_length=1)]  # built-in set (refusal, sentiment) or a JSONL file
    layer: Annotated[int, Field(ge=0)]  # block output (0-based)
    window: Annotated[str, StringConstraints(pattern=r"^((last|first):[1-9][0-9]*|all)$")]  # last:K | first:K | all
    method: vectors.Method
    clean: Union[Literal["massive"], CleanModel, None] = None  # massive | {dims: [..]} | {top: K}


class SweepModel(_Strict):
    """Coefficients start x factor^k, k = -steps..steps (geometric steps both ways from the start)."""

    start: Union[definitions.Calibrated, Annotated[Number, Field(gt=0)]]  # a number or a calibrated base coefficient
    factor: Annotated[Number, Field(gt=1, le=100)] = 1.25
    steps: Annotated[int, Field(ge=1, le=20)] = 4


class TraitModel(_Strict):
    """Trait (pos) and anti-trait (neg) continuations whose log-odds at the response start score it."""

    pos: Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]
    neg: Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]


class SteeringModel(_Strict):
    """A steering configuration: a named vector's unit direction x coef after a block, swept over
    coefficients, its generated text judged for trait and coherence on held-out evaluation prompts."""

    vector: Name
    coefs: Optional[Annotated[list[Annotated[Number, Field(gt=0)]], Field(min_length=1)]] = None
    sweep: Optional[SweepModel] = None
    layer: Optional[Annotated[int, Field(ge=0)]] = None  # default: the vector's layer
    positions: definitions.Position = "all"
    first: bool = False  # steer position 0 too
    prompts: Annotated[int, Field(ge=1, le=1000)] = definitions.PROMPTS
    prompt_set: Optional[Annotated[str, StringConstraints(min_length=1)]] = (
        None  # built-in set or file; default: the vector's contrast set's name
    )
    max_new_tokens: Annotated[int, Field(ge=1, le=512)] = definitions.MAX_NEW_TOKENS
    threshold: Annotated[Number, Field(ge=0, le=100)] = 70.0  # coherence a coefficient needs to count
    trait: Optional[TraitModel] = None  # trait_logit's words; default: the built-in set's own
    judge: Optional[Annotated[str, StringConstraints(min_length=1)]] = (
        None  # trait judge: vader | refusal | entry point | module:function
    )
    judge_model: Optional[ModelName] = None  # coherence judge; default: --judge-model, else the other bundled model


class DefaultsModel(_Strict):
    """`_defaults.yaml`: defaults for every spec in its directory and below."""

    models: Union[Literal["any"], ModelName, list[ModelName]] = "any"
    data: DataModel = DataModel()
    massive: MassiveModel = MassiveModel()
    golden: Union[bool, GoldenModel] = False
    vectors: dict[Name, VectorModel] = {}  # named steering vectors the checks refer to
    steering: dict[Name, SteeringModel] = {}  # named steering configurations (sweeps) the checks refer to


class _SpecBase(DefaultsModel):
    """One spec: a claim, the configurations it needs, and checks that must all hold."""

    id: Optional[Name] = None  # default: the file's stem (-N for the N-th document)
    claim: Text
    source: str = ""
    notes: str = ""
    interventions: dict[Name, Union[str, Annotated[list[str], Field(min_length=1)]]] = {}
    xfail: Union[Text, Annotated[dict[ModelName, Text], Field(min_length=1)], None] = None
    # The claim cannot be decided on a model at this data size (its interval straddles the bound):
    # the run expects `inconclusive` there, and says so when the claim becomes decisive.
    inconclusive: Union[Text, Annotated[dict[ModelName, Text], Field(min_length=1)], None] = None
    claims: list[ClaimId] = []  # the catalogue's claims it encodes (claims.md: C1-C18), for the claims matrix


def json_schema(defaults: bool = False) -> dict[str, Any]:
    """The JSON Schema of a spec document (or of `_defaults.yaml`), for editors."""
    document = (DefaultsModel if defaults else schema().spec).model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "massive_checks defaults" if defaults else "massive_checks spec"
    return document


# --------------------------------------------------------------------------- runtime objects


@dataclass(frozen=True)
class Step:
    kind: str  # change | difference | over_layers
    value: Any  # (from, to) or how

    def text(self) -> str:
        if self.kind == "over_layers":
            return f"over_layers={self.value}"
        kind = "relative change" if self.kind == "change" else "difference"
        return f"{kind} {self.value[0]}->{self.value[1]}"


@dataclass(frozen=True)
class Quantity:
    """What is observed: a measure on a configuration, then its steps in order."""

    measure: Measure
    config: str = "baseline"
    layers: str | None = None  # None: every layer
    steps: tuple[Step, ...] = ()

    @property
    def between_configs(self) -> Step | None:
        return next((s for s in self.steps if s.kind in ("change", "difference")), None)

    def configs(self) -> set[str]:
        """The configurations this quantity reads."""
        step = self.between_configs
        return {*(step.value if step else (self.config,)), *self.measure.configs()}

    @property
    def single(self) -> bool:
        """One value (not one per layer): a single-valued measure, or reduced over layers."""
        return not self.measure.per_layer or any(s.kind == "over_layers" for s in self.steps)

    @property
    def numeric(self) -> bool:
        return self.measure.numeric

    def key(self) -> str:
        """A stable name built from what is measured (not from display text): golden keys.
        Steps before a change come first, then the change (or [config]), the layers, the rest."""
        parts = [self.measure.name, *(f"{k}={v}" for k, v in self.measure.params().items())]
        between = self.between_configs
        at = self.steps.index(between) if between else len(self.steps)
        parts += [s.text() for s in self.steps[:at]]
        parts.append(between.text() if between else f"[{self.config}]")
        if self.measure.layered:
            parts.append(f"layers {self.layers or 'all'}")
        return " ".join(parts + [s.text() for s in self.steps[at + 1 :]])

    def describe(self) -> str:
        text = self.measure.text()
        text += f" [{self.config}]" if not self.between_configs else ""
        text += f", layers {self.layers or 'all'}" if self.measure.layered else ""
        return text + "".join(f", then {s.text()}" for s in self.steps)


@dataclass(frozen=True)
class Bound:
    kind: str  # at_least | at_most | between | approx | equals | subset_of | contains | excludes
    value: Any  # a number, [low, high], a label or a frozenset (by kind)
    rel: float = 0.1  # approx only

    def text(self) -> str:
        v = self.value
        return {
            "between": lambda: f"in [{v[0]:g}, {v[1]:g}]",
            "at_least": lambda: f">= {v:g}",
            "at_most": lambda: f"<= {v:g}",
            "approx": lambda: f"{v:g} ± {self.rel:.0%}",
            "equals": lambda: f"== {_set_text(v) if isinstance(v, frozenset) else v}",
            "subset_of": lambda: f"⊆ {_set_text(v)}",
            "contains": lambda: f"⊇ {_set_text(v)}",
            "excludes": lambda: f"∌ {_set_text(v)}",
        }[self.kind]()

    def sides(self) -> set[str]:
        """Which ways this bound constrains the value: "low", "high" (numbers) or "set"."""
        return {"between": {"low", "high"}, "approx": {"low", "high"}, "at_least": {"low"}, "at_most": {"high"}}.get(
            self.kind, {"set"}
        )

    def holds(self, value: Any) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        kind, target = self.kind, self.value
        if kind == "between":
            return bool(target[0] <= value <= target[1])
        if kind == "at_least":
            return bool(value >= target)
        if kind == "at_most":
            return bool(value <= target)
        if kind == "approx":
            return bool(abs(value - target) <= self.rel * abs(target))
        items = frozenset(value) if isinstance(value, (list, set, frozenset)) else frozenset([value])
        if kind == "equals":
            if isinstance(value, (list, set, frozenset)):  # a set equals a set, or one element
                return items == (target if isinstance(target, frozenset) else frozenset([target]))
            return bool(value == target)
        if kind == "subset_of":
            return bool(items <= target)
        if kind == "contains":
            return bool(target <= items)
        return not (target & items)  # excludes


def _set_text(values: Any) -> str:
    return "{" + ", ".join(map(str, sorted(values))) + "}"


@dataclass(frozen=True)
class Check:
    quantity: Quantity
    bound: Bound
    line: int
    versus: Quantity | None = None  # compare checks: the bound applies to |a| / |b| or a - b
    by: str = "ratio"
    id: str | None = None  # the spec's own name for it; else the key comes from the quantity
    reference: str | None = None  # the source's value for it, shown in reports (never judged)

    def key(self) -> str:
        """Stable across rewording and reordering: what goldens and results key on."""
        if self.id:
            return self.id
        if self.versus is None:
            return self.quantity.key()
        return f"{self.quantity.key()} {self.by} vs {self.versus.key()}"


@dataclass(frozen=True)
class Spec:
    id: str
    claim: str
    path: str
    line: int
    models: tuple[str, ...] | None  # None: any model
    data: DataConfig
    checks: tuple[Check, ...]
    interventions: dict[str, Any] = field(default_factory=dict, hash=False)  # name -> [Request]
    vectors: dict[str, Any] = field(default_factory=dict, hash=False)  # name -> vectors.VectorDef
    steering: dict[str, Any] = field(default_factory=dict, hash=False)  # name -> definitions.SteeringDef
    massive: tuple[float, float] = (100.0, 1000.0)  # (min |a|, min ratio to the median)
    xfail: str | dict[str, str] | None = None  # reason (every model), or {model: reason}
    inconclusive: str | dict[str, str] | None = None  # reason (every model), or {model: reason}
    claims: tuple[str, ...] = ()
    golden: GoldenConfig | None = None  # when the spec compares against a snapshot
    source: str = ""
    notes: str = ""

    def xfail_for(self, model: str) -> str | None:
        """Why this claim is known false on `model`, if it is."""
        return self.xfail.get(model) if isinstance(self.xfail, dict) else self.xfail

    def inconclusive_for(self, model: str) -> str | None:
        """Why this claim cannot be decided on `model` at this size, if it cannot."""
        return self.inconclusive.get(model) if isinstance(self.inconclusive, dict) else self.inconclusive

    def applies_to(self, model: str) -> bool:
        return self.models is None or model in self.models

    def configs(self) -> set[str]:
        return set().union(*(q.configs() for q in self.quantities()))

    def quantities(self) -> list[Quantity]:
        return [q for check in self.checks for q in (check.quantity, check.versus) if q is not None]

    def named_dims(self) -> set[int]:
        """Residual dims the spec names (parameters, bounds on dim-valued measures, dim
        interventions), to check against a model's width before running."""
        dims = set().union(*(q.measure.named_dims() for q in self.quantities()))
        for check in self.checks:
            if check.quantity.measure.dims_in_bound:
                value = check.bound.value
                dims.update(value if isinstance(value, frozenset) else [value] if isinstance(value, int) else [])
        for definition in self.vectors.values():
            dims.update(definition.clean.dims if definition.clean else ())
        for requests in self.interventions.values():
            for r in requests:
                if r.target == "dims":
                    dims.update(int(d) for d in r.selection.split(",") if d.strip().isdigit())
        return dims


# --------------------------------------------------------------------------- loading


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
    _validate(DefaultsModel, doc, str(path), {})
    return {key: (value, _Origin(str(path), doc)) for key, value in doc.items()}


def _validate(
    model: type[BaseModel], doc: Any, path: str, origins: dict[str, Any]
) -> Any:  # the model's instance, its fields read by name
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


def _spec(path: str, doc: Any, index: int, defaults: dict[str, Any]) -> Spec:
    own = dict(doc)
    merged = type(doc)({**{k: v for k, (v, _) in defaults.items() if k not in doc}, **own})
    merged.line, merged.key_lines = doc.line, dict(doc.key_lines)
    origins = {k: origin for k, (_, origin) in defaults.items() if k not in doc}
    model = _validate(schema().spec, merged, path, origins)
    where = _Where(path, doc)
    configs = _interventions(model, where)
    defined = _vectors(model, merged, where, origins)
    sweeps = _steering(model, merged, where, origins, defined)
    checks = tuple(
        _check(raw, parsed, f"checks[{i}].", set(configs) | {"baseline"}, where, set(defined), sweeps)
        for i, (raw, parsed) in enumerate(zip(doc["checks"], model.checks))
    )
    measures = [q.measure for c in checks for q in (c.quantity, c.versus) if q is not None]
    used_sweeps = set().union(*(m.steering_refs() for m in measures))
    used = set().union(*(m.vector_refs() for m in measures)) | {sweeps[n].vector for n in used_sweeps}
    for key, names in (("steering", used_sweeps), ("vectors", used)):
        for name in doc.get(key, {}):
            if name not in names:  # a typo'd reference would otherwise leave it silently unchecked
                where.fail(doc[key], name, "is defined here but no check reads it", f"{key}.")
    _unique_check_ids(doc["checks"], checks, where)
    spec = Spec(
        id=model.id or Path(path).stem + (f"-{index}" if index else ""),
        claim=model.claim,
        path=path,
        line=doc.line,
        models=None if model.models == "any" else tuple([model.models] if isinstance(model.models, str) else model.models),
        data=DataConfig(model.data.dataset, model.data.samples, model.data.seq_len),
        checks=checks,
        interventions=configs,
        vectors={n: v for n, v in defined.items() if n in used},
        steering={n: v for n, v in sweeps.items() if n in used_sweeps},
        massive=(model.massive.min_value, model.massive.min_ratio),
        xfail=dict(model.xfail) if isinstance(model.xfail, dict) else model.xfail,
        inconclusive=dict(model.inconclusive) if isinstance(model.inconclusive, dict) else model.inconclusive,
        claims=tuple(model.claims),
        golden=_golden(model.golden),
        source=model.source,
        notes=model.notes.strip(),
    )
    if model.models == []:
        where.fail(merged, "models", "names no model: list at least one, or write `any`")
    for key in ("xfail", "inconclusive"):
        named = _expected_on(getattr(model, key)) - {"*"}
        runs_on = list(spec.models) if spec.models is not None else None
        outside = sorted(named - set(runs_on)) if runs_on is not None else []
        if outside:
            where.fail(doc, key, f"names {', '.join(outside)}, which the spec does not run on (models: {runs_on})")
    both = _expected_on(model.xfail) & _expected_on(model.inconclusive)
    if both:
        where.fail(
            doc,
            "inconclusive",
            f"the claim is also an expected failure (xfail) on {', '.join(sorted(both))}: "
            "a claim is expected contradicted or inconclusive, not both",
        )
    identity = _Identity(configs, defined, sweeps)
    for i, (raw, check) in enumerate(zip(doc["checks"], checks)):
        _can_fail(raw, check, f"checks[{i}].", where, identity)
    if "massive" in doc and not _uses_massive_rule(spec):
        where.fail(
            doc,
            "massive",
            "no check or intervention of this spec applies the massive rule "
            f"({', '.join(sorted(n for n, c in REGISTRY.items() if c.uses_massive_rule))}, dims:...#massive)",
        )
    return spec


def _expected_on(reason: Any) -> set[str]:
    """Models an xfail / inconclusive value names ("*": every model)."""
    return set() if reason is None else set(reason) if isinstance(reason, dict) else {"*"}


class _Identity:
    """What a quantity resolves to, with its names replaced by their definitions (configurations
    by their interventions, vectors and steering runs by theirs): two quantities that resolve to
    the same thing compare a number with itself."""

    def __init__(self, configs: dict[str, Any], vectors: dict[str, Any], sweeps: dict[str, Any]) -> None:
        self.configs, self.vectors, self.sweeps = configs, vectors, sweeps

    def config(self, name: str) -> tuple[Any, ...]:
        return tuple(sorted(r.text for r in self.configs.get(name, [])))

    def of(self, q: Quantity) -> tuple[Any, ...]:
        params = {}
        for key, value in q.measure.params().items():
            if key in getattr(q.measure, "vector_fields", ()):
                value = self.vectors.get(value, value)
            elif key == "steering" and value in self.sweeps:
                sweep = self.sweeps[value]
                value = (sweep, self.vectors.get(sweep.vector))
            elif key == "versus":
                value = self.config(value)
            params[key] = value
        steps = tuple((s.kind, tuple(self.config(c) for c in s.value) if s.kind != "over_layers" else s.value) for s in q.steps)
        return (
            q.measure.name,
            tuple(sorted(params.items(), key=lambda kv: kv[0])),
            self.config(q.config) if not q.between_configs else None,
            q.layers or "all",
            steps,
        )


def _can_fail(raw: Any, check: Check, prefix: str, where: _Where, identity: _Identity) -> None:
    """Checks that cannot fail are errors: a number compared with itself (a compare, change or
    difference whose two sides resolve to the same configuration, vector or steering run), and a
    bound that admits every value the quantity can take."""
    sides = (
        [(prefix, raw, check.quantity)]
        if check.versus is None
        else [(f"{prefix}compare.{side}.", raw["compare"][side], q) for side, q in (("a", check.quantity), ("b", check.versus))]
    )
    for side_prefix, side_raw, q in sides:
        step = q.between_configs
        if step is not None and identity.config(step.value[0]) == identity.config(step.value[1]):
            where.fail(
                side_raw,
                step.kind if step.kind in side_raw else "steps",
                f"{list(step.value)} resolve to the same "
                f"configuration: this {step.kind} is 0 whatever the model does, so the check cannot fail",
                side_prefix,
            )
        names = [getattr(q.measure, f) for f in getattr(q.measure, "vector_fields", ())]
        if len(names) == 2 and identity.vectors.get(names[0]) == identity.vectors.get(names[1]):
            where.fail(
                side_raw,
                "b",
                f"vectors {names[0]!r} and {names[1]!r} have the same definition: their "
                f"{q.measure.name} is fixed, so the check cannot fail",
                side_prefix,
            )
    if check.versus is not None and identity.of(check.quantity) == identity.of(check.versus):
        where.fail(
            raw,
            "compare",
            "its two sides resolve to the same quantity (the same measure on the same "
            "configuration, vector or steering run): the comparison is fixed, so the check cannot fail",
            prefix,
        )
    low, high = check_range(check)
    if _admits_all(check.bound, low, high):
        what = check.quantity.measure.name if check.versus is None else f"the compare's {check.by}"
        hint = (
            " (an existence claim: bound a count, e.g. {measure: massive_positions, at_least: 1})"
            if check.quantity.measure.name == "emergence_layer"
            else ""
        )
        where.fail(
            raw,
            check.bound.kind,
            f"{check.bound.text()} admits every value {what} can take ([{low:g}, {high:g}]): the check cannot fail{hint}",
            prefix,
        )


def quantity_range(q: Quantity) -> tuple[float, float]:
    """The values a quantity can take: its measure's value_range through its steps."""
    low, high = q.measure.value_range
    for step in q.steps:
        if step.kind == "change":  # (b - a) / |a|: >= -1 for values >= 0
            low, high = (-1.0 if low >= 0 else -math.inf), math.inf
        elif step.kind == "difference":
            low, high = low - high, high - low
        elif step.value in ("mean_abs", "max_abs"):
            low, high = (low if low >= 0 else 0.0), max(abs(low), abs(high))
    return low, high


def check_range(check: Check) -> tuple[float, float]:
    a = quantity_range(check.quantity)
    if check.versus is None:
        return a
    b = quantity_range(check.versus)
    return (0.0, math.inf) if check.by == "ratio" else (a[0] - b[1], a[1] - b[0])


def _admits_all(bound: Bound, low: float, high: float) -> bool:
    kind, target = bound.kind, bound.value
    if kind == "approx":
        kind, target = "between", (target - bound.rel * abs(target), target + bound.rel * abs(target))
    if kind == "at_least":
        return bool(target <= low)
    if kind == "at_most":
        return bool(target >= high)
    return kind == "between" and bool(target[0] <= low and target[1] >= high)


class _Where:
    """Raises SpecError pointing at a key of a raw mapping."""

    def __init__(self, path: str, doc: Any) -> None:
        self.path, self.doc = path, doc

    def fail(self, mapping: Any, key: Any, message: str, prefix: str = "") -> NoReturn:
        line = getattr(mapping, "key_lines", {}).get(key, getattr(mapping, "line", None))
        raise SpecError(self.path, line, prefix + str(key), message)


def _golden(raw: Any) -> GoldenConfig | None:
    if raw is False:
        return None
    if raw is True:
        return GoldenConfig()
    keys = tuple((pattern, Tolerance(t.rtol, t.atol)) for pattern, t in raw.keys.items())
    return GoldenConfig(Tolerance(raw.rtol, raw.atol), keys)


def _interventions(model: Any, where: _Where) -> dict[str, Any]:
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


def _vectors(model: Any, merged: Any, where: _Where, origins: dict[str, Any]) -> dict[str, vectors.VectorDef]:
    """`vectors:` -> VectorDef per name; a contrast file that does not exist is an error here."""
    raw = merged.get("vectors", {})
    at = _Where(origins["vectors"].path, origins["vectors"].mapping) if "vectors" in origins else where
    defined = {}
    for name, v in model.vectors.items():
        node = raw[name]
        clean = v.clean
        if isinstance(clean, CleanModel):
            if (clean.dims is None) == (clean.top is None):
                at.fail(node, "clean", "give one of dims: [..] or top: K (or write clean: massive)", f"vectors.{name}.")
            clean = (
                vectors.Cleaning("dims", tuple(sorted(clean.dims))) if clean.dims else vectors.Cleaning("top", k=clean.top or 0)
            )
        elif clean == "massive":
            clean = vectors.Cleaning("massive")
        _readable_pairs(at, node, v.pairs, f"vectors.{name}.")
        defined[name] = vectors.VectorDef(v.pairs, v.layer, Window.parse(v.window).text(), v.method, clean)
    return defined


def _steering(
    model: Any, merged: Any, where: _Where, origins: dict[str, Any], defined: dict[str, Any]
) -> dict[str, definitions.SteeringDef]:
    """`steering:` -> SteeringDef per name: its vector is defined, it has coefficients, and its
    trait words are known (the built-in sets' own, or given)."""
    raw = merged.get("steering", {})
    at = _Where(origins["steering"].path, origins["steering"].mapping) if "steering" in origins else where
    parsed = {}
    for name, s in model.steering.items():
        node, prefix = raw[name], f"steering.{name}."
        if s.vector not in defined:
            at.fail(
                node,
                "vector",
                f"unknown vector {s.vector!r}; defined under vectors: {', '.join(sorted(defined)) or 'none'}",
                prefix,
            )
        if s.coefs is None and s.sweep is None:
            at.fail(node, "vector", "give coefs: [..] or sweep: {start: .., factor: .., steps: ..}", prefix)
        pairs = defined[s.vector].pairs
        if s.trait is None and pairs not in contrast.TRAITS:
            at.fail(
                node,
                "vector",
                f"contrast set {pairs!r} has no built-in trait words: give trait: {{pos: [..], neg: [..]}}",
                prefix,
            )
        if s.prompt_set is None and pairs not in contrast.BUILTIN_SETS:
            at.fail(node, "vector", f"contrast set {pairs!r} has no built-in evaluation prompts: give prompt_set: <file>", prefix)
        try:
            contrast.eval_prompts(s.prompt_set or pairs, s.prompts)
        except MassiveChecksError as exc:
            at.fail(node, "prompt_set" if s.prompt_set else "prompts", str(exc), prefix)
        if s.judge is None and pairs not in judges.DEFAULT_FOR_SET:
            at.fail(
                node,
                "vector",
                f"contrast set {pairs!r} has no default trait judge: give judge: <vader | refusal | "
                f"entry point | module:function>",
                prefix,
            )
        try:
            judges.trait_judge(s.judge or judges.DEFAULT_FOR_SET[pairs])
        except ValueError as exc:
            at.fail(node, "judge", str(exc), prefix)
        sweep = None if s.sweep is None else definitions.Sweep(s.sweep.start, float(s.sweep.factor), s.sweep.steps)
        trait = None if s.trait is None else (tuple(s.trait.pos), tuple(s.trait.neg))
        parsed[name] = definitions.SteeringDef(
            s.vector,
            tuple(float(c) for c in s.coefs or ()),
            sweep,
            s.layer,
            s.positions,
            s.first,
            s.prompts,
            s.max_new_tokens,
            float(s.threshold),
            trait,
            s.judge,
            s.judge_model,
            s.prompt_set,
        )
    return parsed


def _readable_pairs(where: _Where, mapping: Any, pairs: str, prefix: str) -> None:
    """A contrast set named in a spec exists and reads (file, line and key otherwise)."""
    try:
        contrast.read(pairs)
    except MassiveChecksError as exc:
        where.fail(mapping, "pairs", str(exc), prefix)


def _check(
    raw: Any,
    parsed: Any,
    prefix: str,
    configs: set[str],
    where: _Where,
    defined: Set[str] = frozenset(),
    sweeps: dict[str, Any] | None = None,
) -> Check:
    bound = _bound(raw, parsed, prefix, where)
    if hasattr(parsed, "compare"):
        pair, raw_pair = parsed.compare, raw["compare"]
        a = _quantity(raw_pair["a"], pair.a, prefix + "compare.a.", configs, where, defined, sweeps)
        b = _quantity(raw_pair["b"], pair.b, prefix + "compare.b.", configs, where, defined, sweeps)
        _comparable(raw_pair, a, b, prefix + "compare.", where)
        return Check(a, bound, raw.line, versus=b, by=pair.by, id=parsed.id, reference=parsed.reference)
    return Check(
        _quantity(raw, parsed, prefix, configs, where, defined, sweeps), bound, raw.line, id=parsed.id, reference=parsed.reference
    )


def _steering_reference(raw: Any, measure: Measure, prefix: str, where: _Where, sweeps: dict[str, Any]) -> None:
    """A steering measure names a defined configuration, and a numeric coef is one it runs."""
    for name in measure.steering_refs():
        if name not in sweeps:
            where.fail(
                raw,
                "steering",
                f"unknown steering configuration {name!r}; defined under steering: {', '.join(sorted(sweeps)) or 'none'}",
                prefix,
            )
        coef = getattr(measure, "coef", None)
        sweep = sweeps[name].sweep
        if coef in definitions.CALIBRATED and (sweep is None or sweep.start not in definitions.CALIBRATED):
            where.fail(
                raw,
                "coef",
                f"{coef} is run only by a sweep from a calibrated start "
                f"(steering {name!r}: sweep: {{start: calibrated_without_massive, ...}})",
                prefix,
            )
        if isinstance(coef, float) and sweeps[name].sweep is None and coef not in sweeps[name].coefs:
            where.fail(
                raw,
                "coef",
                f"{coef:g} is not among steering {name!r}'s coefs {list(sweeps[name].coefs)} "
                f"(or use calibrated / calibrated_without_massive)",
                prefix,
            )


def _measure_of(parsed: Any) -> Measure:
    cls = REGISTRY[parsed.measure]
    return cls(**{name: getattr(parsed, name) for name in cls.model_fields})


def _quantity(
    raw: Any,
    parsed: Any,
    prefix: str,
    configs: set[str],
    where: _Where,
    defined: Set[str] = frozenset(),
    sweeps: dict[str, Any] | None = None,
) -> Quantity:
    steps = _steps(raw, parsed, prefix, where)
    measure = _measure_of(parsed)
    _steering_reference(raw, measure, prefix, where, sweeps or {})
    for key in getattr(measure, "vector_fields", ()):
        if getattr(measure, key) not in defined:
            where.fail(
                raw,
                key,
                f"unknown vector {getattr(measure, key)!r}; defined under vectors: {', '.join(sorted(defined)) or 'none'}",
                prefix,
            )
    if hasattr(parsed, "pairs"):
        _readable_pairs(where, raw, parsed.pairs, prefix)
    for key in ("config", "versus"):
        if key in raw and getattr(parsed, key) not in configs:
            where.fail(raw, key, f"unknown configuration {raw[key]!r}; defined: {', '.join(sorted(configs))}", prefix)
    for step in steps:
        if step.kind != "over_layers" and not set(step.value) <= configs:
            key = step.kind if step.kind in raw else "steps"
            where.fail(raw, key, f"{step.value} names an unknown configuration; defined: {', '.join(sorted(configs))}", prefix)
    if "config" in raw and any(s.kind != "over_layers" for s in steps):
        where.fail(raw, "config", "has no effect here: with a change or difference, the configurations come from it", prefix)
    layers = getattr(parsed, "layers", None)
    if layers is not None:
        try:
            interventions.parse_layers(str(layers), None)  # syntax and order; the model's depth is checked later
        except ValueError as exc:
            where.fail(raw, "layers", str(exc), prefix)
    return Quantity(measure, parsed.config, None if layers in (None, "all") else str(layers), steps)


def _steps(raw: Any, parsed: Any, prefix: str, where: _Where) -> tuple[Step, ...]:
    """Top-level change / difference / over_layers (one of them), or `steps:` in order."""
    short = [k for k in ("change", "difference", "over_layers") if getattr(parsed, k, None) is not None]
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
    steps = [Step(k, getattr(parsed, k)) for k in short]
    for i, step in enumerate(written or []):
        present = [k for k in ("change", "difference", "over_layers") if getattr(step, k) is not None]
        if len(present) != 1:
            where.fail(raw, "steps", f"step {i + 1} must be one of change, difference, over_layers", prefix)
        steps.append(Step(present[0], getattr(step, present[0])))
    kinds = [s.kind for s in steps]
    if sum(k != "over_layers" for k in kinds) > 1 or kinds.count("over_layers") > 1:
        where.fail(raw, "steps", "at most one change (or difference) and one over_layers", prefix)
    per_layer = REGISTRY[parsed.measure].shape == "layers"
    if "over_layers" in kinds and not per_layer:
        where.fail(
            raw, "steps", f"has no effect here: over_layers reduces a number per layer; {parsed.measure} is not one", prefix
        )
    if written is not None and not written:
        where.fail(raw, "steps", "an empty list of steps has no effect", prefix)
    return tuple(Step(s.kind, tuple(s.value) if s.kind != "over_layers" else s.value) for s in steps)


def _bound(raw: Any, parsed: Any, prefix: str, where: _Where) -> Bound:
    present = [k for k in BOUNDS if getattr(parsed, k, None) is not None]
    if len(present) != 1:
        key = present[1] if present else ("compare" if "compare" in raw else "measure")
        where.fail(raw, key, f"needs exactly one bound: {', '.join(k for k in BOUNDS if hasattr(parsed, k))}", prefix)
    kind = present[0]
    value = getattr(parsed, kind)
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


def _comparable(pair: Any, a: Quantity, b: Quantity, prefix: str, where: _Where) -> None:
    """Needs numbers on both sides, and one value each or the same layers each."""
    for side, q in (("a", a), ("b", b)):
        if not q.numeric:
            where.fail(pair, side, f"compare needs numbers; {q.measure.name} is not a number", prefix)
    if a.single != b.single or (not a.single and (a.layers or "all") != (b.layers or "all")):
        where.fail(
            pair,
            "a",
            "compare needs one value on each side (add over_layers) or the same layers on both sides (compared layer by layer)",
            prefix,
        )


def _unique_check_ids(raw_checks: list[Any], parsed: tuple[Check, ...], where: _Where) -> None:
    seen = set()
    for raw, check in zip(raw_checks, parsed):
        if check.id is not None:
            if check.id in seen:
                where.fail(raw, "id", f"duplicate check id {check.id!r}")
            seen.add(check.id)


def _uses_massive_rule(spec: Spec) -> bool:
    return any(q.measure.uses_massive_rule for q in spec.quantities()) or any(
        r.at_massive_cells for requests in spec.interventions.values() for r in requests
    )


# --------------------------------------------------------------------------- schema errors -> file:line:key

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
        if measure in REGISTRY:
            fields = (schema().sides if "compare" in loc else schema().checks)[measure].model_fields
            if key in BOUNDS:
                return f"{key} does not apply to {measure}; its bounds: {', '.join(b for b in BOUNDS if b in fields)}"
            if key in WHY_NOT_HERE:
                return "has no effect here: " + WHY_NOT_HERE[key].format(m=measure)
            return f"unknown key for {measure}; its keys: {', '.join(sorted(fields))}"
        model: Any = (
            {
                "data": DataModel,
                "massive": MassiveModel,
                "golden": GoldenModel,
                "vectors": CleanModel if "clean" in loc else VectorModel,
                "steering": SweepModel if "sweep" in loc else TraitModel if "trait" in loc else SteeringModel,
            }.get(loc[0])
            if len(loc) > 1
            else schema().spec
        )
        return f"unknown key; allowed: {', '.join(sorted(model.model_fields))}" if model else "unknown key"
    if kind.startswith("union_tag"):
        names = ", ".join(sorted(REGISTRY))
        if not (isinstance(value, dict) and "measure" in value):
            return f"a check needs measure: (one of {names}) or compare:"
        return f"unknown measure {value['measure']!r}; allowed: {names}"
    if kind == "missing":
        parent = value if isinstance(value, dict) else holder
        needer = parent.get("measure") if isinstance(parent, dict) else None
        return f"{needer} needs {loc[-1]}" if needer in REGISTRY else "required key is missing"
    if key == "head" and kind == "string_type":  # YAML reads 5.10 as the float 5.1: head 1, not 10
        return "must be a quoted 'layer.head', e.g. \"5.10\""
    if kind in ("int_type", "float_type") and isinstance(value, bool):
        return "must be a number, not true/false"
    if kind == "literal_error":
        return f"must be one of {error['ctx']['expected']}"
    return str(error["msg"])
