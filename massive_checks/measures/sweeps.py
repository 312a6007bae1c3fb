"""Steering runs as measures (claims C15, C17, C18): a spec's named `steering:` configuration is
swept once per session (steer.sweep, every coefficient in shared batches), and measures read the
trait and coherence scores off the sweep: the best trait effect at or above the coherence
threshold, the coefficient that gives it, the coherence at a coefficient, where coherence breaks.

A sweep runs coef 0 (the unsteered model: trait baseline, coherence 100), the coefficients the
configuration lists, and its geometric sweep. A sweep that starts from a calibrated base
coefficient of C15 (the mean activation norm at the steered layer over the vector's window, with
or without the massive dims; a unit vector has norm 1) runs both calibrated coefficients too."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, Optional, Union

from pydantic import Field, StringConstraints

from .. import contrast, steer
from ..steer import CALIBRATED, SteeringDef, SteeringResult
from .base import Measure, register
from .steering import activation_norm, vector_of

SteeringName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$")]
Coef = Union[Annotated[float, Field(gt=0)], Literal[CALIBRATED]]
SAMPLES = 2  # generated texts per shown coefficient in reports


@dataclass(frozen=True)
class SweepOutcome:
    results: tuple[SteeringResult, ...]  # coef 0 first, then ascending coefs
    threshold: float  # coherence (0-100) a coefficient needs to count
    calibrated: dict  # "calibrated" / "calibrated_without_massive" -> coefficient

    @property
    def baseline(self) -> SteeringResult:
        return self.results[0]

    def effect(self, result: SteeringResult) -> float:
        """Trait score change from the unsteered model (the seed's "delta")."""
        return result.trait - self.baseline.trait

    def at(self, coef) -> SteeringResult:
        """The result at a swept coefficient (or a calibrated one, run by a sweep from one)."""
        value = self.calibrated.get(coef, coef)
        for result in self.results:
            if math.isclose(result.coef, value, rel_tol=1e-9):
                return result
        raise ValueError(f"coef {coef}: not a coefficient of this sweep ({', '.join(f'{r.coef:.4g}' for r in self.results)})")

    def best(self) -> SteeringResult | None:
        """The largest trait effect among coefficients > 0 whose coherence is >= the threshold."""
        coherent = [r for r in self.results[1:] if r.coherence >= self.threshold]
        return max(coherent, key=lambda r: r.trait, default=None)

    def cliff(self) -> float:
        """The smallest coefficient > 0 whose coherence is below the threshold (nan: none swept)."""
        return next((r.coef for r in self.results[1:] if r.coherence < self.threshold), math.nan)


def sweep_of(view, name: str) -> SweepOutcome:
    """The spec's steering configuration `name` on this model, swept once per session."""
    definition = view.steering_def(name)
    key = ("sweep", definition, view.vector_def(definition.vector), view.min_value, view.min_ratio)
    return view.session.memo(key, lambda: _sweep(view, definition))


def _sweep(view, definition: SteeringDef) -> SweepOutcome:
    lm, vector_def = view.lm, view.vector_def(definition.vector)
    layer = vector_def.layer if definition.layer is None else definition.layer
    pairs_view = view.contrast(vector_def.pairs)
    calibrated = {name: activation_norm(pairs_view, vector_def.window, layer, without)
                  for name, without in zip(CALIBRATED, (None, "massive"))}
    coefs = set(definition.coefs)
    if definition.sweep is not None:
        start = definition.sweep.start
        coefs |= set(definition.sweep.coefs(calibrated.get(start, start)))
        if start in CALIBRATED:  # a search from a calibrated start also runs the other one (C15)
            coefs |= set(calibrated.values())
    coefs = [0.0] + sorted(coefs)
    texts = contrast.read(vector_def.pairs).heldout_prompts(definition.prompts)
    prompts = [lm.tokenizer(t)["input_ids"] for t in texts]
    words = dict(zip(("pos", "neg"), definition.trait)) if definition.trait else contrast.TRAITS[vector_def.pairs]
    trait = steer.encode_trait(lm.tokenizer, words)
    vector = vector_of(view, definition.vector).values
    unsteered_key = ("unsteered", tuple(map(tuple, prompts)), tuple(map(tuple, trait["pos"] + trait["neg"])), len(trait["pos"]),
                     definition.max_new_tokens)
    baseline = view.session.memo(unsteered_key, lambda: steer.unsteered(lm, prompts, trait, definition.max_new_tokens))
    results = steer.sweep(lm, [(vector, c) for c in coefs], layer, prompts, trait, definition.max_new_tokens,
                          definition.positions, definition.first, baseline=baseline)
    return SweepOutcome(tuple(results), definition.threshold, calibrated)


class _OnSteering(Measure):
    """A measure of one named steering configuration's sweep."""

    steering: SteeringName
    shape: ClassVar[str] = "value"

    def steering_refs(self) -> set[str]:
        return {self.steering}

    def figure(self, view, layers):
        return steering_panel(view, self.steering)


def steering_panel(view, name: str) -> dict:
    """Trait and coherence per coefficient of one configuration, its threshold and calibrated
    coefficients, and generated samples (unsteered, best coherent coefficient, the cliff)."""
    outcome = sweep_of(view, name)
    shown = [outcome.baseline] + [r for r in (outcome.best(),) if r is not None]
    if not math.isnan(outcome.cliff()):
        shown.append(outcome.at(outcome.cliff()))
    return {"steering": {name: {
        "coefs": [r.coef for r in outcome.results[1:]], "trait": [r.trait for r in outcome.results[1:]],
        "coherence": [r.coherence for r in outcome.results[1:]], "baseline_trait": outcome.baseline.trait,
        "threshold": outcome.threshold, "calibrated": dict(outcome.calibrated),
        "samples": {f"{r.coef:.4g}": list(r.texts[:SAMPLES]) for r in shown}}}}


@register
class TraitEffect(_OnSteering):
    """Change of the trait score (0-100) from the unsteered model: at `coef`, or (without one) the
    largest over the coefficients whose coherence is at or above the configuration's threshold
    (nan when none is: the claim cannot be checked)."""
    measure: Literal["trait_effect"] = "trait_effect"
    coef: Optional[Coef] = None

    def compute(self, view, layers):
        outcome = sweep_of(view, self.steering)
        result = outcome.best() if self.coef is None else outcome.at(self.coef)
        return math.nan if result is None else outcome.effect(result)


@register
class Coherence(_OnSteering):
    """Coherence (0-100) of the model steered at `coef` (a swept coefficient, or a calibrated one)."""
    measure: Literal["coherence"] = "coherence"
    coef: Coef

    def compute(self, view, layers):
        return sweep_of(view, self.steering).at(self.coef).coherence


@register
class BestCoef(_OnSteering):
    """The coefficient with the largest trait effect at or above the coherence threshold (nan: none)."""
    measure: Literal["best_coef"] = "best_coef"

    def compute(self, view, layers):
        best = sweep_of(view, self.steering).best()
        return math.nan if best is None else best.coef


@register
class CoherenceCliff(_OnSteering):
    """The smallest swept coefficient whose coherence falls below the threshold (nan: none does)."""
    measure: Literal["coherence_cliff"] = "coherence_cliff"

    def compute(self, view, layers):
        return sweep_of(view, self.steering).cliff()

