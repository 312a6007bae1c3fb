"""Steering vectors as measures: cosine between vectors, energy share in a set of dims, dominant
dims, accuracy as a classifier, and the activation norm with and without the massive dims that
calibrates a steering coefficient (claims C14-C16). Vectors are the spec's named `vectors:`
(vector_defs.VectorDef), built once per session from pooled captures of their contrast set's pass."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Union

from pydantic import Field, StringConstraints

from massive_checks.base.constants import MASSIVE_RULE
from massive_checks.base.lazy import LazyModule
from massive_checks.language import contrast, intervals, vector_defs
from massive_checks.language.definitions import Name as VectorName
from massive_checks.language.definitions import WindowText
from massive_checks.language.intervals import Estimate, Units
from massive_checks.language.vector_defs import VectorDef
from massive_checks.measures.base import Measure, PerLayer, register
from massive_checks.measures.panels import CosinePanel, EnergyPanel, NormsPanel
from massive_checks.steering import vectors
from massive_checks.steering.vectors import Vector

if TYPE_CHECKING:
    import torch

    from massive_checks.engine import readings
else:  # imported at first use: the spec schema reads the measure classes without torch
    torch = LazyModule("torch")
    readings = LazyModule("massive_checks.engine.readings")

DimSet = Union[
    Literal["massive"],
    Annotated[str, StringConstraints(pattern=r"^top:[1-9][0-9]*$")],
    Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)],
]


def vector_of(view, name: str) -> Vector:
    """The spec's vector `name` on this model, built once per session (keyed by its definition
    and the massive rule, which cleaning may use)."""
    definition = view.vector_def(name)
    key = ("vector", definition, view.min_value, view.min_ratio)
    return view.session.memo(key, lambda: build(view.contrast(definition.pairs), definition))


def build(pairs_view, definition: VectorDef) -> Vector:
    """Extract (train examples only), clean if asked, and score the vector as a classifier; and
    refit it on resamples of the training examples (vectors.mean_diff_replicates, probe_refits,
    pca_replicates) for intervals."""
    acts = pairs_view.pooled(definition.window, definition.layer)  # [S, D]
    labels = contrast.read(definition.pairs)
    train, heldout, y = labels.train, labels.heldout, labels.labels
    pos, neg = acts[train & (y == 1)], acts[train & (y == 0)]
    units = split_units(pairs_view, train, "train")
    weights = torch.from_numpy(pairs_view.bootstrap.weights(units))  # [B, N train]
    intercept, replicates, why = None, None, ""
    if definition.method == "mean_diff":
        values = vectors.mean_diff(pos, neg)
        positive = y[train] == 1
        replicates = vectors.mean_diff_replicates(pos, neg, weights[:, positive], weights[:, ~positive])
    elif definition.method == "probe":
        theta = vectors.logistic_optimum(acts[train], y[train])
        values, intercept = theta[:-1].float(), float(theta[-1])
        replicates = vectors.probe_refits(acts[train], y[train], theta, weights)
    else:  # refit on each resample (a batched eigh of the pairs' Gram matrix)
        values = vectors.pca(pos, neg)
        replicates = vectors.pca_replicates(pos, neg, weights[:, y[train] == 1])
    zeroed: tuple[int, ...] = ()
    if definition.clean is not None:
        zeroed = dims_of(pairs_view, definition.window, definition.layer, definition.clean)
        values, intercept = vectors.clean(values, zeroed), None
        replicates = None if replicates is None else vectors.clean_rows(replicates, zeroed)
    if intercept is None:  # a direction without its own threshold: halfway between the classes
        threshold = vectors.midpoint(acts[train], y[train], values)
    else:  # the probe's own decision: x . w + b > 0
        threshold = -intercept
    correct = {
        "train": vectors.correct(acts[train], y[train], values, threshold),
        "heldout": vectors.correct(acts[heldout], y[heldout], values, threshold),
    }
    return Vector(
        values,
        zeroed,
        float(correct["train"].double().mean()),
        float(correct["heldout"].double().mean()) if bool(heldout.any()) else float("nan"),
        replicates,
        units,
        why,
        correct,
    )


def split_units(pairs_view, members: torch.Tensor, split: str) -> Units:
    """The examples of one split of a contrast set as sampling units, resampled by the set's
    groups (a prompt's pos and neg together) and forms (contrast.ContrastSet.factors)."""
    whole = pairs_view.units()
    labels = contrast.read(pairs_view.data.dataset)
    chosen = members.tolist()
    kind = f"{split} contrast examples (resampled by {labels.units_text(chosen)})"
    return Units(f"{whole.key}|{split}", int(members.sum()), kind, labels.factors(chosen))


def vector_estimate(view, names: tuple[str, ...], fn_values, fn_rows) -> Estimate:
    """A number computed from named vectors: fn_values on their values, fn_rows on their
    replicates (paired: vectors of the same contrast set share resamples); no interval when one
    of them has no replicates."""
    built = [vector_of(view, name) for name in names]
    value = float(fn_values(*(v.values for v in built)))
    missing = next((v.no_interval for v in built if v.replicates is None), None)
    if missing is not None:
        return Estimate(value, None, None, reason=missing or "the vector has no replicates")
    units = [v.units for v in built if v.units is not None]  # a vector with replicates has units
    return Estimate(value, fn_rows(*(v.replicates for v in built)).numpy(), intervals.joint_units(units))


def dims_of(pairs_view, window: str, layer: int, which) -> tuple[int, ...]:
    """A dim set at one layer of a contrast set: a vector_defs.Cleaning, or a measure's `dims` /
    `without` (massive | top:K | a list). massive: the paper's rule on the contrast texts' block
    output (every real token); top: the K dims of largest mean |activation| in the window."""
    dim_set = vector_defs.Cleaning.of(which)
    if dim_set.top is not None:
        return vectors.top_dims(pairs_view.pooled(window, layer), dim_set.top)
    if dim_set.dims is not None:
        return dim_set.dims
    return tuple(sorted(readings.massive_dims(pairs_view, layer)))


def check_dim_set(which, lm, key: str) -> None:
    """ValueError when a top-K dim set (a measure's `top:K`, a vector's `clean: {top: K}`) asks
    for more dims than the model has."""
    if which is None:
        return
    top = vector_defs.Cleaning.of(which).top
    if top is not None and top > lm.width:
        raise ValueError(f"{key} top:{top}: {lm.name}'s residual stream has {lm.width} dims")


class _OnVectors(Measure):
    """A measure of named vectors; subclasses list the fields naming vectors."""

    vector_fields: ClassVar[tuple[str, ...]] = ("vector",)
    shape: ClassVar[str] = "value"

    def vector_refs(self) -> set[str]:
        return {getattr(self, f) for f in self.vector_fields}

    def figure(self, view, layers):
        return vectors_panel(view, sorted(view.vectors))


def vectors_panel(view, names: list[str]) -> list:
    """Energy share of each vector's 8 dominant dims, and the cosine of each pair (of the vectors
    the spec reads)."""
    built = {name: vector_of(view, name) for name in names}
    energy = {
        name: {d: vectors.energy_share(v.values, [d]) for d in vectors.dominant_dims(v.values, 8)} for name, v in built.items()
    }
    cosines = {f"{a}|{b}": vectors.cosine(built[a].values, built[b].values) for a in names for b in names if a < b}
    return [EnergyPanel(energy), CosinePanel(tuple(names), cosines)]


@register
class Cosine(_OnVectors):
    """Cosine similarity between two named vectors."""

    measure: Literal["cosine"] = "cosine"
    a: VectorName
    b: VectorName
    vector_fields: ClassVar[tuple[str, ...]] = ("a", "b")
    value_range: ClassVar = (-1.0, 1.0)

    def compute(self, view, layers):
        return vector_estimate(view, (self.a, self.b), vectors.cosine, vectors.cosine_rows)


@register
class EnergyShare(_OnVectors):
    """Share of a vector's squared norm in a set of dims (the massive dims at its layer, the top-K
    dims by mean |activation| in its window, or a list), ||v_S||^2 / ||v||^2."""

    measure: Literal["energy_share"] = "energy_share"
    vector: VectorName
    dims: DimSet = "massive"

    uses_massive_rule: ClassVar[bool] = True  # its massive dims come from the rule
    value_range: ClassVar = (0.0, 1.0)

    def named_dims(self) -> set[int]:
        return set(self.dims) if isinstance(self.dims, list) else set()

    def check_model(self, lm, layers):
        check_dim_set(self.dims, lm, "dims")

    def compute(self, view, layers):
        definition = view.vector_def(self.vector)
        dims = dims_of(view.contrast(definition.pairs), definition.window, definition.layer, self.dims)
        return vector_estimate(
            view, (self.vector,), lambda v: vectors.energy_share(v, dims), lambda rows: vectors.energy_share_rows(rows, dims)
        )


@register
class DominantDims(_OnVectors):
    """The k dims with the largest |v_d| of a vector."""

    measure: Literal["dominant_dims"] = "dominant_dims"
    vector: VectorName
    k: Annotated[int, Field(ge=1)] = 1
    shape: ClassVar[str] = "set"
    dims_in_bound: ClassVar[bool] = True

    def check_model(self, lm, layers):
        if self.k > lm.width:
            raise ValueError(f"k {self.k}: {lm.name}'s residual stream has {lm.width} dims")

    def compute(self, view, layers):
        return frozenset(vectors.dominant_dims(vector_of(view, self.vector).values, self.k))


@register
class ZeroedDims(_OnVectors):
    """The dims a cleaned vector set to 0 (empty for an uncleaned vector)."""

    measure: Literal["zeroed_dims"] = "zeroed_dims"
    vector: VectorName
    shape: ClassVar[str] = "set"
    dims_in_bound: ClassVar[bool] = True

    def compute(self, view, layers):
        return frozenset(vector_of(view, self.vector).zeroed)


@register
class Accuracy(_OnVectors):
    """Share of contrast examples the vector classifies right (pos when x . v is above the probe's
    own threshold, or for other vectors the midpoint of the two training classes' projections)."""

    measure: Literal["accuracy"] = "accuracy"
    vector: VectorName
    split: Literal["train", "heldout"] = "heldout"
    value_range: ClassVar = (0.0, 1.0)

    def compute(self, view, layers):
        """Resampled over the split's examples, the vector held fixed (its own fit's spread is
        not in this interval)."""
        built = vector_of(view, self.vector)
        pairs_view = view.contrast(view.vector_def(self.vector).pairs)
        members = (
            contrast.read(view.vector_def(self.vector).pairs).train
            if self.split == "train"
            else contrast.read(view.vector_def(self.vector).pairs).heldout
        )
        return pairs_view.bootstrap.mean(built.correct[self.split].double().numpy(), split_units(pairs_view, members, self.split))


@register
class BaseCoef(_OnVectors):
    """The calibrated base steering coefficient (C15): the mean activation norm at the vector's
    layer and window (`without` a dim set, or over every dim) / the norm of the unit vector steered
    with (= 1: a coefficient scales the unit vector)."""

    measure: Literal["base_coef"] = "base_coef"
    vector: VectorName
    without: DimSet | None = None
    uses_massive_rule: ClassVar[bool] = True  # `without: massive` applies the rule
    value_range: ClassVar = (0.0, math.inf)

    def named_dims(self) -> set[int]:
        return set(self.without) if isinstance(self.without, list) else set()

    def check_model(self, lm, layers):
        check_dim_set(self.without, lm, "without")

    def compute(self, view, layers):  # divided by ||unit vector|| = 1: the vector itself is not needed
        definition = view.vector_def(self.vector)
        return activation_norm(view.contrast(definition.pairs), definition.window, definition.layer, self.without)


def activation_norm(pairs_view, window: str, layer: int, without) -> Estimate:
    """Mean over the contrast examples of ||pooled activation||, with `without` dims zeroed."""
    dims = dims_of(pairs_view, window, layer, without) if without is not None else ()
    return pairs_view.mean(vectors.norms(pairs_view.pooled(window, layer), dims))


class _OnActivations(PerLayer):
    pairs: Annotated[str, StringConstraints(min_length=1)]
    window: WindowText
    uses_massive_rule: ClassVar[bool] = True

    def contrast_needs(self, defined: Mapping[str, VectorDef]) -> set[tuple[str, str]]:
        return {(self.pairs, self.window)}

    def figure(self, view, layers):
        pairs_view = view.contrast(self.pairs)
        every = range(view.lm.n_layers)
        return [
            NormsPanel(
                {
                    f"{self.pairs}, window {self.window}": {
                        "with": [activation_norm(pairs_view, self.window, L, None).value for L in every],
                        "without": [activation_norm(pairs_view, self.window, L, "massive").value for L in every],
                    }
                }
            )
        ]


@register
class ActivationNorm(_OnActivations):
    """Mean over the contrast examples of the norm of the window-pooled block output, over every
    dim or `without` a dim set (massive: the paper's rule at that layer; top:K; a list) (C14)."""

    measure: Literal["activation_norm"] = "activation_norm"
    without: DimSet | None = None
    value_range: ClassVar = (0.0, math.inf)

    def named_dims(self) -> set[int]:
        return set(self.without) if isinstance(self.without, list) else set()

    def check_model(self, lm, layers):
        check_dim_set(self.without, lm, "without")

    def at(self, view, layer):
        return activation_norm(view.contrast(self.pairs), self.window, layer, self.without)


@register
class NormShare(_OnActivations):
    """Share of the window-pooled activations' squared norm in a dim set at that layer (default:
    the massive dims): sum_i ||a_i,S||^2 / sum_i ||a_i||^2, 0 where the set is empty (C14)."""

    measure: Literal["norm_share"] = "norm_share"
    dims: DimSet = "massive"
    value_range: ClassVar = (0.0, 1.0)

    def named_dims(self) -> set[int]:
        return set(self.dims) if isinstance(self.dims, list) else set()

    def check_model(self, lm, layers):
        check_dim_set(self.dims, lm, "dims")

    def at(self, view, layer):
        """A ratio of sums over examples, resampled by example (the dim set held fixed)."""
        pairs_view = view.contrast(self.pairs)
        dims = dims_of(pairs_view, self.window, layer, self.dims)
        a = pairs_view.pooled(self.window, layer).double()
        inside = a[:, list(dims)].pow(2).sum(dim=1) if len(dims) else torch.zeros(len(a), dtype=torch.float64)
        return pairs_view.bootstrap.ratio_of_totals(inside.numpy(), a.pow(2).sum(dim=1).numpy(), pairs_view.units())


CLI_VECTORS = ("mean_diff", "probe", "mean_diff_cleaned", "probe_cleaned")


def named_definition(name: str, pairs: str, layer: int, window: str) -> VectorDef:
    """A command-line vector name (a method, `_cleaned`: its massive dims zeroed) -> its definition."""
    clean = vector_defs.Cleaning.massive() if name.endswith("_cleaned") else None
    return VectorDef.model_validate(
        {"pairs": pairs, "layer": layer, "window": window, "method": name.removesuffix("_cleaned"), "clean": clean}
    )


def vectors_document(session, pairs: str, layer: int, window: str, massive=MASSIVE_RULE) -> dict:
    """`massive-checks vectors`: mean_diff and probe at one layer and window, cleaned of the
    massive dims, their geometry, the norm with and without the massive dims, and calibration.
    Vectors unnormalised, cleaned ones unit norm; energy and norm share over the massive dims."""
    from massive_checks.language.data import DataConfig
    from massive_checks.language.interventions import BASELINE

    definitions = {name: named_definition(name, pairs, layer, window) for name in CLI_VECTORS}
    view = session.view(DataConfig(), BASELINE, massive, vectors=definitions)
    pairs_view = view.contrast(pairs)
    built = {name: vector_of(view, name) for name in CLI_VECTORS}
    dims = sorted(readings.massive_dims(pairs_view, layer))
    norm_with, norm_without = (activation_norm(pairs_view, window, layer, w).value for w in (None, "massive"))
    return {
        "model": session.lm.name,
        "layer": layer,
        "window": window,
        "massive_dims": dims,
        "counts": contrast.read(pairs).counts(),
        "vectors": {name: v.values.tolist() for name, v in built.items()},
        "cosine": {
            f"{a}|{b}": vectors.cosine(built[a].values, built[b].values)
            for i, a in enumerate(CLI_VECTORS)
            for b in CLI_VECTORS[i + 1 :]
        },
        "energy": {name: vectors.energy_share(built[name].values, dims) for name in ("mean_diff", "probe")},
        "norm": {
            "with": norm_with,
            "without": norm_without,
            "share": vectors.energy_of_dims(pairs_view.pooled(window, layer), dims),
        },
        "calibration": {"with": norm_with, "without": norm_without},  # base_coef: the norm / ||unit vector|| (1)
        "probe_accuracy": {"train": built["probe"].train_accuracy, "heldout": built["probe"].heldout_accuracy},
    }
