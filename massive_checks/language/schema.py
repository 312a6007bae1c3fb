"""What a spec file may write: the schema, built from the measure registry and the typed values
of language/definitions.py (and the data, golden and vector definitions, which are their own runtime
objects). The same schema is exported as JSON Schema for editors (`massive-checks schema`).

It checks keys, types and allowed values; the rules a schema cannot say are in rules.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, Discriminator, Field, StringConstraints, Tag, create_model

from massive_checks.base.constants import MASSIVE_RULE
from massive_checks.language.data import DataConfig
from massive_checks.language.definitions import AS_TUPLE, Frozen, ModelName, Name, Number, SteeringDef
from massive_checks.language.measure import NUMERIC_SHAPES, MeasureDef, registry
from massive_checks.language.tolerance import GoldenConfig
from massive_checks.language.vector_defs import VectorDef

DEFAULT_KEYS = ("models", "data", "massive", "golden", "vectors", "steering")
STEP_KINDS = ("change", "difference", "over_layers")
NUMBER_BOUNDS = ("at_least", "at_most", "between", "approx")
SET_BOUNDS = ("subset_of", "contains", "excludes")
BOUNDS = (*NUMBER_BOUNDS, "equals", *SET_BOUNDS)

Text = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
Layers = Union[Annotated[int, Field(ge=0)], Annotated[str, StringConstraints(max_length=1000)]]
OverLayers = Literal["mean", "max", "min", "mean_abs", "max_abs"]
ConfigPair = Annotated[tuple[Name, ...], Field(min_length=2, max_length=2), AS_TUPLE]  # [from, to]
Interval = Annotated[list[Number], Field(min_length=2, max_length=2)]  # [low, high]
ClaimId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", max_length=50)]  # e.g. C7


class MassiveModel(Frozen):
    """The paper's rule: |a| > min_value and |a| >= min_ratio x the sequence's median."""

    min_value: Annotated[Number, Field(gt=0)] = MASSIVE_RULE[0]
    min_ratio: Annotated[Number, Field(gt=0)] = MASSIVE_RULE[1]


class Step(Frozen):
    """One step of a quantity, in order: a change between two configurations, or a reduction over
    the layer range."""

    change: ConfigPair | None = None  # relative: (to - from) / |from|
    difference: ConfigPair | None = None  # to - from
    over_layers: OverLayers | None = None

    @property
    def kind(self) -> str:
        """change | difference | over_layers (the loader refuses a step with none or several)."""
        return next((k for k in STEP_KINDS if getattr(self, k) is not None), "")

    @property
    def value(self) -> Any:
        """(from, to), or how over_layers reduces."""
        return getattr(self, self.kind)

    def text(self) -> str:
        if self.kind == "over_layers":
            return f"over_layers={self.value}"
        kind = "relative change" if self.kind == "change" else "difference"
        return f"{kind} {self.value[0]}->{self.value[1]}"


def _quantity_fields(cls: type[MeasureDef]) -> dict[str, Any]:
    fields: dict[str, Any] = {"config": (Name, "baseline")}
    if cls.layered:
        fields["layers"] = (Optional[Layers], None)
    if cls.shape in NUMERIC_SHAPES:
        fields["change"] = (Optional[ConfigPair], None)
        fields["difference"] = (Optional[ConfigPair], None)
        fields["steps"] = (Optional[list[Step]], None)
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


def _bound_fields(cls: type[MeasureDef]) -> dict[str, Any]:
    ints = list[Annotated[int, Field(ge=0)]]
    if cls.shape in NUMERIC_SHAPES:
        return {**NUMBER_BOUND_FIELDS, "equals": (Optional[Number], None)}
    if cls.shape == "label":
        return {"equals": (Optional[Literal[cls.labels]] if cls.labels else Optional[str], None)}
    equals = ints if cls.shape == "set" else Union[Annotated[int, Field(ge=0)], ints]
    set_bounds = {kind: (Optional[ints], None) for kind in SET_BOUNDS}
    return {"equals": (Optional[equals], None), **set_bounds, **NUMBER_BOUND_FIELDS}  # numbers: its size, with count: true


@dataclass(frozen=True)
class Schema:
    """The spec schema for the measures registered now: per measure, the flat model of a check
    (parameters, quantity keys, bounds) and of a compare side (no bounds); the spec model."""

    checks: Mapping[str, type[BaseModel]]
    sides: Mapping[str, type[BaseModel]]
    spec: type[BaseModel]


_SCHEMAS: dict[tuple[tuple[str, type[MeasureDef]], ...], Schema] = {}


def for_registry() -> Schema:
    """Built from registry() once per set of registered measures (a measure registered later, e.g.
    by a plugin or a test, is in the next schema)."""
    key = tuple(registry().items())
    if key not in _SCHEMAS:
        _SCHEMAS.clear()
        _SCHEMAS[key] = _build_schema()
    return _SCHEMAS[key]


# A check's `reference`: the source's own value for what the check measures (e.g. "+33.0 - +24.8 on
# Gemma 3 4B"), shown beside the models' values in the reports' reference table; never judged.
REFERENCE_FIELD: Any = (Optional[Annotated[str, StringConstraints(min_length=1, max_length=300)]], None)


def _build_schema() -> Schema:
    checks, sides = {}, {}
    for name, cls in registry().items():
        base = _quantity_fields(cls)
        # A compare side may read another model (a --model value, NAME@REVISION included): a check
        # across models or checkpoints (objects.Spec.across).
        sides[name] = create_model(
            f"{cls.__name__}Quantity", __base__=cls, __doc__=cls.__doc__, model=(Optional[ModelName], None), **base
        )
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
        "ComparePair", __base__=Frozen, a=(side_field, ...), b=(side_field, ...), by=by_field
    )  # |a| / |b|, or a - b
    compare = create_model(
        "CompareCheck",
        __base__=Frozen,
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
    return Annotated[Union[tuple(tagged)], Discriminator(_measure_tag)]  # noqa: UP007  (a union of a run-time tuple)


COMPARE_DOC = "A bound on how two quantities compare: |a| / |b| (by: ratio) or a - b (by: difference)."


class DefaultsModel(Frozen):
    """`_defaults.yaml`: defaults for every spec in its directory and below."""

    models: Literal["any"] | ModelName | list[ModelName] = "any"
    data: DataConfig = DataConfig()
    massive: MassiveModel = MassiveModel()
    golden: bool | GoldenConfig = False
    vectors: dict[Name, VectorDef] = {}  # named steering vectors the checks refer to
    steering: dict[Name, SteeringDef] = {}  # named steering configurations (sweeps) the checks refer to


class _SpecBase(DefaultsModel):
    """One spec: a claim, the configurations it needs, and checks that must all hold."""

    id: Name | None = None  # default: the file's stem (-N for the N-th document)
    claim: Text
    source: str = ""
    notes: str = ""
    interventions: dict[Name, str | Annotated[list[str], Field(min_length=1)]] = {}
    xfail: Text | Annotated[dict[ModelName, Text], Field(min_length=1)] | None = None
    # The claim cannot be decided on a model at this data size (its interval straddles the bound):
    # the run expects `inconclusive` there, and says so when the claim becomes decisive.
    inconclusive: Text | Annotated[dict[ModelName, Text], Field(min_length=1)] | None = None
    claims: list[ClaimId] = []  # the catalogue's claims it encodes (claims.md: C1-C18), for the claims matrix
    # claim: it tests a source's claim (a cell of that claim's row in the claims matrix); measured:
    # its bounds were set from this model's own observations (a regression guard, listed apart).
    kind: Literal["claim", "measured"] = "claim"


def json_schema(defaults: bool = False) -> dict[str, Any]:
    """The JSON Schema of a spec document (or of `_defaults.yaml`), for editors."""
    document = (DefaultsModel if defaults else for_registry().spec).model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "massive_checks defaults" if defaults else "massive_checks spec"
    return document
