"""Steering runs as measures (claims C15, C17, C18): a spec's named `steering:` configuration is
swept once per session (steer.sweep, every coefficient in shared batches), and measures read the
judged trait and coherence scores off the sweep (steer.py, judges.py): the best trait effect at or
above the coherence threshold, the coefficient that gives it, the coherence at a coefficient,
where coherence breaks. Every score is a mean over the evaluation prompts, and every measure's
interval resamples the prompts, paired across the sweep's coefficients (the best coefficient and
the cliff are chosen again in each resample; coherence's reference L_0 is recomputed in it).

A sweep runs coef 0 (the unsteered model: trait baseline, coherence ~100), the coefficients the
configuration lists, and its geometric sweep. A sweep that starts from a calibrated base
coefficient of C15 (the mean activation norm at the steered layer over the vector's window, with
or without the massive dims; a unit vector has norm 1) runs both calibrated coefficients too."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

import numpy as np
from pydantic import Field

from massive_checks.base.errors import MassiveChecksError
from massive_checks.base.lazy import LazyModule
from massive_checks.language import contrast, judges
from massive_checks.language.definitions import CALIBRATED, Calibrated, Frozen, SteeringDef
from massive_checks.language.definitions import Name as SteeringName
from massive_checks.language.intervals import Estimate, Units
from massive_checks.measures.base import Measure, register
from massive_checks.measures.panels import SteeringPanel
from massive_checks.measures.steering import activation_norm, vector_of
from massive_checks.steering import coherence

if TYPE_CHECKING:
    from massive_checks.steering import scoring, steer
    from massive_checks.steering.steer import SteeringResult
else:  # imported at first use: the spec schema reads the measure classes without torch
    steer = LazyModule("massive_checks.steering.steer")
    scoring = LazyModule("massive_checks.steering.scoring")

Coef = Union[Annotated[float, Field(gt=0)], Calibrated]
PROMPTS = "prompts"  # texts_of's key of the prompts (the others are coefficients)


@dataclass(frozen=True)
class SweepOutcome:
    results: tuple[SteeringResult, ...]  # coef 0 first, then ascending coefs
    threshold: float  # coherence (0-100) a coefficient needs to count
    calibrated: dict  # "calibrated" / "calibrated_without_massive" -> coefficient
    prompts_key: str = ""  # identifies the prompts (sweeps on the same prompts resample them together)
    start: float = math.nan  # a geometric sweep's start coefficient (nan: no sweep)
    chance: float = math.nan  # log V of the judge model (coherence's zero); nan: no judge model given
    judged_by: tuple[str, str] = ("", "")  # (trait judge, judge model), for reports
    search: SweepOutcome | None = None  # the configuration's search, on its search prompts (the others: these results)
    stop: str = ""  # a search's own: where and why it stopped, and where it started
    prompts: tuple[str, ...] = ()  # the evaluation prompts' texts, in order

    @property
    def baseline(self) -> SteeringResult:
        return self.results[0]

    def effect(self, result: SteeringResult, score: str = "trait") -> float:
        """Trait score change from the unsteered model (the seed's "delta"); score: "trait" (judged)
        or "logit" (trait_logit)."""
        return _score(result, score) - _score(self.baseline, score)

    def at(self, coef) -> SteeringResult:
        """The result at a swept coefficient (or a calibrated one, run by a sweep from one)."""
        value = self.calibrated.get(coef, coef)
        for result in self.results:
            if math.isclose(result.coef, value, rel_tol=1e-9):
                return result
        raise ValueError(f"coef {coef}: not a coefficient of this sweep ({', '.join(f'{r.coef:.4g}' for r in self.results)})")

    def best(self, score: str = "trait") -> SteeringResult | None:
        """The largest trait effect among coefficients > 0 whose coherence is >= the threshold;
        with a search, the one the search chose, as scored on the other prompts."""
        if self.search is not None:
            chosen = self.search.best(score)
            return None if chosen is None else self.at(chosen.coef)
        coherent = [r for r in self.results[1:] if r.coherence >= self.threshold]
        return max(coherent, key=lambda r: _score(r, score), default=None)

    def cliff(self) -> float:
        """The smallest coefficient > 0 whose coherence is below the threshold (nan: none swept);
        with a search, the search's."""
        if self.search is not None:
            return self.search.cliff()
        return next((r.coef for r in self.results[1:] if r.coherence < self.threshold), math.nan)

    @property
    def searched(self) -> SweepOutcome:
        """Where the best coefficient and the cliff are chosen: the search, or this sweep."""
        return self if self.search is None else self.search

    # -- resampled over prompts (paired: every coefficient ran on the same prompts)
    def units(self) -> Units:
        return Units(f"prompts|{self.prompts_key}", len(self.baseline.judged.traits), "prompts")

    def resampled(self, bootstrap, score: str = "trait") -> tuple[np.ndarray, np.ndarray]:
        """(trait [B, C], coherence [B, C]) of every coefficient (coef 0 first) on each resample of
        the prompts: the means over prompts and coherence (coherence.coherence_scores, its L_0 the
        resample's mean unsteered loss) redone. score: "trait" (judged) or "logit"."""
        weights = bootstrap.weights(self.units())  # [B, P]
        field = "traits" if score == "trait" else "logits"
        if any(getattr(r.judged, field) is None for r in self.results):
            raise ValueError("score: logit on a sweep run without the trait log-odds (sweep_of(..., logits=True))")
        traits = np.array([getattr(r.judged, field) for r in self.results])  # [C, P]
        losses = np.array([r.judged.losses for r in self.results], dtype=np.float64)  # [C, P]
        distinct = np.array([r.judged.distinct for r in self.results])  # [C, P]
        trait = weights @ traits.T / weights.shape[1]
        return trait, coherence.run_coherence(weights, losses, distinct, losses[0], distinct[0], self.chance)

    def estimate(self, bootstrap, value: float, pick, score: str = "trait") -> Estimate:
        """An Estimate of `value` whose replicates are pick(trait [B, C], coherence [B, C], coefs
        [C]) -> [B] on the resampled prompts."""
        trait, coherence = self.resampled(bootstrap, score)
        coefs = np.array([r.coef for r in self.results])
        return Estimate(value, np.asarray(pick(trait, coherence, coefs), dtype=np.float64), self.units())

    def intervals(self, bootstrap) -> list[dict]:
        """Per coefficient (coef 0 first): the bootstrap intervals over prompts of its trait and
        coherence scores, {"trait_ci": [lo, hi], "coherence_ci": [lo, hi]}."""
        trait, coherence = self.resampled(bootstrap)
        units = self.units()
        return [
            {
                "trait_ci": _ends(Estimate(r.trait, trait[:, c], units), bootstrap),
                "coherence_ci": _ends(Estimate(r.coherence, coherence[:, c], units), bootstrap),
            }
            for c, r in enumerate(self.results)
        ]

    def best_index(self, trait: np.ndarray, coherence: np.ndarray) -> np.ndarray:
        """[B] index of the best coherent coefficient > 0 per resample (-1: none coherent)."""
        eligible = coherence[:, 1:] >= self.threshold
        masked = np.where(eligible, trait[:, 1:], -np.inf)
        return np.where(eligible.any(axis=1), masked.argmax(axis=1) + 1, -1)


def _ends(estimate: Estimate, bootstrap) -> list[float] | None:
    interval = estimate.interval(bootstrap.confidence)
    return None if interval is None else [float(interval[0]), float(interval[1])]


def _score(result: SteeringResult, score: str) -> float:
    return result.trait if score == "trait" else result.trait_logit


def sweep_of(view, name: str, logits: bool = False) -> SweepOutcome:
    """The spec's steering configuration `name` on this model, swept once per session; with
    `logits`, the trait log-odds too (trait_logit: only `score: logit` reads them). Asked both
    ways, the second sweep reads the first's generations and judgements and computes only what
    the first left out."""
    definition = view.steering_def(name)
    key = ("sweep", definition, view.vector_def(definition.vector), view.min_value, view.min_ratio, logits)
    return view.session.memo(key, lambda: _sweep(view, definition, logits))


def coef_run(view, name: str, coef: float, logits: bool = False) -> SweepOutcome:
    """Configuration `name` at one more coefficient (chosen elsewhere, e.g. where another method
    peaks), on the prompts its scores use: coef 0 and `coef`."""
    definition = view.steering_def(name)
    key = ("coef run", definition, view.vector_def(definition.vector), view.min_value, view.min_ratio, logits, coef)
    return view.session.memo(key, lambda: _run(view, _setup(view, definition), [0.0, coef], logits, scored=True))


@dataclass(frozen=True)
class _Setup:
    """What every run of one configuration shares: its vector, layer, prompts, trait words, judges."""

    definition: SteeringDef
    vector: Any  # torch.Tensor [D]
    layer: int
    calibrated: dict  # "calibrated" / "calibrated_without_massive" -> coefficient
    texts: list[str]  # every evaluation prompt: a search's first, then the scored ones
    prompts: list[list[int]]
    trait: dict
    judging: Any  # steer.Judging

    @property
    def searched(self) -> int:
        """How many prompts the search runs on (0: no search): the first ones; the rest are scored."""
        return 0 if self.definition.search is None else self.definition.search.prompts


def _setup(view, definition: SteeringDef) -> _Setup:
    lm, vector_def = view.lm, view.vector_def(definition.vector)
    layer = vector_def.layer if definition.layer is None else definition.layer
    calibrated = {
        name: activation_norm(view.contrast(vector_def.pairs), vector_def.window, layer, without).value
        for name, without in zip(CALIBRATED, (None, "massive"))
    }
    texts = contrast.eval_prompts(definition.prompt_set or vector_def.pairs, definition.prompts)
    words = definition.trait.model_dump() if definition.trait else contrast.TRAITS[vector_def.pairs]
    judge_name = definition.judge or judges.DEFAULT_FOR_SET[vector_def.pairs]
    judging = steer.Judging(
        judge_name, judges.trait_judge(judge_name), coherence.fluency_model(view.session, definition.judge_model)
    )
    return _Setup(
        definition,
        vector_of(view, definition.vector).values,
        layer,
        calibrated,
        list(texts),
        [lm.tokenizer(t)["input_ids"] for t in texts],
        scoring.encode_trait(lm.tokenizer, words),
        judging,
    )


def _sweep(view, definition: SteeringDef, logits: bool) -> SweepOutcome:
    setup = _setup(view, definition)
    search = _search(view, setup) if definition.search is not None else None
    coefs, start = _scored_coefs(setup, search)
    outcome = _run(view, setup, coefs, logits, scored=True)
    return dataclasses.replace(outcome, start=float(start), search=search)


def _scored_coefs(setup: _Setup, search: SweepOutcome | None) -> tuple[list[float], float]:
    """_coefs, and the search's pick: what a configuration scores on its scored prompts."""
    coefs, start = _coefs(setup.definition, setup.calibrated)
    if search is not None and (best := search.best()) is not None:
        coefs = sorted({*coefs, best.coef})
    return coefs, start


def _run(view, setup: _Setup, coefs: list[float], logits: bool, scored: bool) -> SweepOutcome:
    """Coefficients `coefs` (0 first) on the scored prompts (scored) or on the search prompts."""
    r = _request(setup, coefs, scored)
    baseline = _unsteered(view, setup.definition, r.prompts, r.prompt_texts, setup.trait, setup.judging, logits)
    results = steer.sweep(
        view.lm,
        r.runs,
        r.layer,
        r.prompts,
        r.prompt_texts,
        r.trait,
        r.max_new_tokens,
        r.judging,
        r.positions,
        r.first,
        baseline=baseline,
        generated=_generated(view),
        logits=logits,
    )
    return SweepOutcome(
        tuple(results),
        setup.definition.threshold,
        setup.calibrated,
        hashlib.sha256(repr(r.prompt_texts).encode()).hexdigest()[:16],
        chance=setup.judging.model.chance,
        judged_by=(setup.judging.trait_name, setup.judging.model.name),
        prompts=tuple(r.prompt_texts),
    )


def _request(setup: _Setup, coefs: list[float], scored: bool):
    """steer.Request of coefficients `coefs` on the scored prompts (scored) or the search prompts."""
    cut = slice(setup.searched, None) if scored else slice(0, setup.searched)
    d = setup.definition
    runs = [(setup.vector, c) for c in coefs]
    return steer.Request(
        runs,
        setup.layer,
        setup.prompts[cut],
        setup.texts[cut],
        setup.trait,
        d.max_new_tokens,
        setup.judging,
        d.positions,
        d.first,
    )


def _generated(view) -> dict:
    """The session's steered runs (steer.sweep's `generated`): a run another sweep made is not made again."""
    return view.session.memo(("steered runs",), dict)


def plan_searches(view, names: set[str]) -> None:
    """Announce the searches a session will run (the configurations `names` of a spec, at
    planning), so that the first search runs all of them in step (_search)."""
    planned = view.session.memo(("planned searches",), dict)
    for name in sorted(names):
        definition = view.steering_def(name)
        if definition.search is not None:
            planned.setdefault(_search_key(view, definition), (view, name))


def _search_key(view, definition: SteeringDef) -> tuple:
    return ("search", definition, view.vector_def(definition.vector), view.min_value, view.min_ratio)


def _search(view, setup: _Setup) -> SweepOutcome:
    """Search.__doc__ (language/definitions.py), on the search prompts. The first search a session
    runs takes every planned one along (plan_searches): each round generates every unfinished
    search's next coefficients in shared batches and judges them together, so no search runs a
    coefficient past its cliff and no batch is part-filled for want of rows. Their scored runs
    (each pick and `coefs` on the other prompts) are then made together the same way."""
    done = view.session.memo(("searches",), dict)
    key = _search_key(view, setup.definition)
    if key not in done:
        todo = {key: setup}
        for other, (other_view, name) in view.session.memo(("planned searches",), dict).items():
            if other not in done and other != key:
                try:
                    todo[other] = _setup(other_view, other_view.steering_def(name))
                except (MassiveChecksError, ValueError):
                    pass  # that configuration's own spec reports it
        searched = _searches_in_step(view, todo)
        done.update(searched)
        # every finished search's scored runs in shared batches, for the sweeps that read them
        requests = [_request(setup, _scored_coefs(setup, searched[k])[0], scored=True) for k, setup in todo.items()]
        steer.prepare(view.lm, requests, _generated(view))
    return done[key]


def _searches_in_step(view, setups: dict) -> dict:
    """{key: the search's SweepOutcome} of searches advanced one coefficient per round together."""
    climbs = {key: _Climb(setup) for key, setup in setups.items()}
    while asked := {key: coefs for key, climb in climbs.items() if (coefs := climb.next())}:
        requests = [_request(climbs[key].setup, [0.0, *coefs], scored=False) for key, coefs in asked.items()]
        steer.prepare(view.lm, requests, _generated(view))
        for key, coefs in asked.items():
            climbs[key].take(_run(view, climbs[key].setup, [0.0, *coefs], False, scored=False))
    return {key: climb.outcome() for key, climb in climbs.items()}


class _Climb:
    """One configuration's search under way, on its grid (Search.grid): from its first rung it steps
    down (one rung a round) until its two lowest rungs are quiet (neither moves the trait by more
    than half a prompt's worth, both coherent), and up (one a round) until a coefficient is
    incoherent or the limit is reached. The results kept are those up to the first incoherent
    coefficient."""

    def __init__(self, setup: _Setup):
        search = setup.definition.search
        assert search is not None
        self.setup, self.search = setup, search
        self.scale = setup.calibrated["calibrated_without_massive"]
        self.base, self.low = search.grid(self.scale)  # self.low: the lowest rung run (or to run first)
        self.limit = search.limit * self.scale
        self.above = [k for k in range(self.low + 1, self.low + 400) if self._coef(k) <= self.limit]
        self.steps_down = 0
        self.done: dict[float, SteeringResult] = {}  # coef -> result, coef 0 (the unsteered model) included
        self.first: SweepOutcome | None = None
        self.noise = 50.0 / search.prompts  # half a prompt's worth: one prompt flipping a 0/1 judge moves it

    def _coef(self, rung: int) -> float:
        return self.base * self.search.factor**rung

    @property
    def lowest(self) -> float:
        return self._coef(self.low)

    def next(self) -> list[float]:
        """The coefficients of the next round (none: the search is over)."""
        if not self.done:
            return [self.lowest]
        coefs = []
        if not self._floor() and self.steps_down < self.search.down:
            self.low, self.steps_down = self.low - 1, self.steps_down + 1
            coefs.append(self.lowest)
        if self.above and self._cliff() is None:
            coefs.append(self._coef(self.above.pop(0)))
        return coefs

    def take(self, outcome: SweepOutcome) -> None:
        self.first = self.first or outcome
        self.done |= {r.coef: r for r in outcome.results}

    def _moves(self, coef: float) -> bool:
        return abs(self.done[coef].trait - self.done[0.0].trait) > self.noise

    def _incoherent(self, coef: float) -> bool:
        return self.done[coef].coherence < self.setup.definition.threshold

    def _quiet(self, rung: int) -> bool:
        coef = self._coef(rung)
        return coef in self.done and not (self._moves(coef) or self._incoherent(coef))

    def _floor(self) -> bool:
        """Whether the search is below any effect: its two lowest rungs are quiet. Two, since one
        quiet rung between noisy ones is common (a sentiment probe's search: +8, +4, +10, +7 from
        the start down)."""
        return self._quiet(self.low) and (self._quiet(self.low + 1) or self._coef(self.low + 1) > self.limit)

    def _cliff(self) -> float | None:
        """The smallest incoherent coefficient run so far."""
        return next((c for c in sorted(self.done) if c > 0 and self._incoherent(c)), None)

    def outcome(self) -> SweepOutcome:
        """The results up to the cliff (one baseline: the same coherence reference), and where and
        why the search stopped and started."""
        assert self.first is not None
        cliff = self._cliff()
        kept = [c for c in sorted(self.done) if cliff is None or c <= cliff]
        outcome = dataclasses.replace(self.first, results=tuple(self.done[c] for c in kept))
        if cliff is not None:
            stop = f"cliff at {cliff:.4g}"
        else:
            stop = f"no cliff up to {kept[-1]:.4g} ({self.search.limit:g} x the calibrated coefficient without the massive dims, {self.scale:.4g})"
        if self._floor():
            start = "below any effect"
        elif self._incoherent(self.lowest):
            start = f"still incoherent after {self.steps_down} steps down"
        else:
            start = f"still moving the trait by more than {self.noise:.3g} after {self.steps_down} steps down"
        return dataclasses.replace(outcome, stop=f"{stop}; from {self.lowest:.4g}, {start}")


def _coefs(definition: SteeringDef, calibrated: dict[str, float]) -> tuple[list[float], float]:
    """0 (the unsteered model) and the configuration's coefficients: its `coefs` (a calibrated
    name: that coefficient) and its sweep's, from a number or a calibrated start; a sweep from a
    calibrated start also runs the other one (C15)."""
    chosen: set[float] = {calibrated[c] if isinstance(c, str) else c for c in definition.coefs}
    start = math.nan
    if definition.sweep is not None:
        start = calibrated[definition.sweep.start] if isinstance(definition.sweep.start, str) else definition.sweep.start
        chosen |= set(definition.sweep.coefs(start))
        if isinstance(definition.sweep.start, str):
            chosen |= set(calibrated.values())
    return [0.0] + sorted(chosen), start


def _unsteered(view, definition: SteeringDef, prompts, texts, trait, judging, logits: bool):
    """The unsteered texts and scores, shared by every sweep of the session on the same prompts,
    trait words, length and judges (with the trait log-odds where a check reads them)."""
    lm = view.lm
    key = (
        "unsteered",
        tuple(texts),
        tuple(map(tuple, trait["pos"] + trait["neg"])),
        len(trait["pos"]),
        definition.max_new_tokens,
        judging.trait_name,
        judging.model.name,
    )
    baseline = view.session.memo(
        key, lambda: steer.unsteered(lm, prompts, texts, trait, definition.max_new_tokens, judging, logits=False)
    )
    if logits:
        baseline = view.session.memo((*key, "logits"), lambda: steer.unsteered_with_logits(lm, baseline, prompts, trait))
    return baseline


class OfSteering(Frozen):
    """`coef: {of: <steering>}`: the coefficient where configuration <steering>'s trait effect
    peaks (its best coherent coefficient), e.g. to test "mean_diff ~0" where the probe works."""

    of: SteeringName


class _OnSteering(Measure):
    """A measure of one named steering configuration's sweep."""

    steering: SteeringName
    shape: ClassVar[str] = "value"

    def steering_refs(self) -> set[str]:
        return {self.steering}

    def figure(self, view, layers):
        return [steering_panel(view, self.steering)]

    def samples(self, view):
        """Every generated text of the configuration (texts_of), the search's (on its prompts) and
        the scored coefficients' (on the others)."""
        return texts_of(self.steering, sweep_of(view, self.steering))


def texts_of(name: str, outcome: SweepOutcome) -> dict:
    """{label: {"prompts": [prompt], coef: [text per prompt]}} of a sweep and of its search."""
    runs = {f"{name} ({len(outcome.baseline.texts)} prompts)": outcome}
    if outcome.search is not None:
        runs = {f"{name} search ({len(outcome.search.baseline.texts)} prompts)": outcome.search, **runs}
    return {label: {PROMPTS: list(o.prompts), **{f"{r.coef:.4g}": list(r.texts) for r in o.results}} for label, o in runs.items()}


def steering_panel(view, name: str) -> SteeringPanel:
    """Trait and coherence per coefficient of one configuration (a search's curve, and its scored
    coefficients on the other prompts), its threshold, calibrated coefficients and cliff."""
    outcome = sweep_of(view, name)
    searched = outcome.searched
    curve = {
        "coefs": [r.coef for r in searched.results[1:]],
        "trait": [r.trait for r in searched.results[1:]],
        "coherence": [r.coherence for r in searched.results[1:]],
        "baseline_trait": searched.baseline.trait,
        "threshold": outcome.threshold,
        "calibrated": dict(outcome.calibrated),
        "judged_by": list(outcome.judged_by),
        "cliff": outcome.cliff(),
        "prompts": len(searched.baseline.texts),
    }
    if outcome.search is not None:
        curve["stop"] = outcome.search.stop
        curve["scored"] = {
            "coefs": [r.coef for r in outcome.results[1:]],
            "trait": [r.trait for r in outcome.results[1:]],
            "coherence": [r.coherence for r in outcome.results[1:]],
            "prompts": len(outcome.baseline.texts),
        }
    return SteeringPanel({name: curve})


@register
class TraitEffect(_OnSteering):
    """Change of the trait score (0-100) from the unsteered model: at `coef` (a coefficient the
    configuration runs, a calibrated one, or `{of: <steering>}`: where that configuration peaks),
    or (without one) at the best coherent coefficient: the largest effect over the coefficients
    whose coherence is at or above the configuration's threshold (nan when none is: the claim
    cannot be checked). With a search, the search picks that coefficient on its prompts and the
    effect is measured on the others, so the pick does not inflate it. `score: trait` is the
    judged score of the generated text; `score: logit` the fast log-odds score (circular for
    vectors built from the responses whose opening words it scores)."""

    measure: Literal["trait_effect"] = "trait_effect"
    coef: Coef | OfSteering | None = None
    score: Literal["trait", "logit"] = "trait"
    value_range: ClassVar = (-100.0, 100.0)

    def steering_refs(self) -> set[str]:
        return {self.steering} | ({self.coef.of} if isinstance(self.coef, OfSteering) else set())

    def figure(self, view, layers):
        return [steering_panel(view, name) for name in sorted(self.steering_refs())]

    def samples(self, view):
        """texts_of the configuration; with `coef: {of: X}`, X's and the run at X's pick too."""
        shown = super().samples(view)
        if isinstance(self.coef, OfSteering):
            other = sweep_of(view, self.coef.of)
            shown |= texts_of(self.coef.of, other)
            peak = other.best()
            if peak is not None:
                shown |= texts_of(f"{self.steering} at {self.coef.of}'s best", coef_run(view, self.steering, peak.coef))
        return shown

    def compute(self, view, layers):
        """Resampled over prompts: without a search, the best coherent coefficient is chosen again
        in each resample; with one, it is held at the search's pick."""
        logits = self.score == "logit"
        if isinstance(self.coef, OfSteering):
            peak = sweep_of(view, self.coef.of).best()
            if peak is None:
                return Estimate(math.nan, None, None, reason=f"{self.coef.of} has no coherent coefficient")
            return self._at(view, coef_run(view, self.steering, peak.coef, logits), peak.coef)
        outcome = sweep_of(view, self.steering, logits=logits)
        if self.coef is not None:
            return self._at(view, outcome, self.coef)
        if outcome.search is not None:
            best = outcome.best(self.score)
            if best is None:
                return Estimate(math.nan, None, None, reason=f"no coherent coefficient: the search's {outcome.search.stop}")
            return self._at(view, outcome, best.coef)

        def best_effect(trait, coherence, coefs):
            best = outcome.best_index(trait, coherence)
            picked = np.take_along_axis(trait, np.maximum(best, 0)[:, None], axis=1)[:, 0]
            return np.where(best >= 0, picked - trait[:, 0], np.nan)

        best = outcome.best(self.score)
        value = math.nan if best is None else outcome.effect(best, self.score)
        return outcome.estimate(view.bootstrap, value, best_effect, self.score)

    def _at(self, view, outcome: SweepOutcome, coef) -> Estimate:
        result = outcome.at(coef)
        column = outcome.results.index(result)
        return outcome.estimate(
            view.bootstrap,
            outcome.effect(result, self.score),
            lambda trait, coherence, coefs: trait[:, column] - trait[:, 0],
            self.score,
        )


@register
class Coherence(_OnSteering):
    """Coherence (0-100) of the model steered at `coef` (a coefficient the configuration runs, or
    a calibrated one), on the prompts its scores use."""

    measure: Literal["coherence"] = "coherence"
    coef: Coef
    value_range: ClassVar = (0.0, 100.0)

    def compute(self, view, layers):
        outcome = sweep_of(view, self.steering)
        result = outcome.at(self.coef)
        column = outcome.results.index(result)
        return outcome.estimate(view.bootstrap, result.coherence, lambda trait, coherence, coefs: coherence[:, column])


@register
class BestCoef(_OnSteering):
    """The coefficient with the largest trait effect at or above the coherence threshold (nan:
    none); with a search, the search's pick, resampled over its prompts."""

    measure: Literal["best_coef"] = "best_coef"
    value_range: ClassVar = (0.0, math.inf)

    def compute(self, view, layers):
        outcome = sweep_of(view, self.steering).searched
        best = outcome.best()

        def best_coef(trait, coherence, coefs):
            index = outcome.best_index(trait, coherence)
            return np.where(index >= 0, coefs[np.maximum(index, 0)], np.nan)

        return outcome.estimate(view.bootstrap, math.nan if best is None else best.coef, best_coef)


@register
class CoherenceCliff(_OnSteering):
    """The smallest swept coefficient whose coherence falls below the threshold (nan: none does;
    with a search, the search's, resampled over its prompts); `per_start: true`: as a multiple of
    the geometric sweep's start coefficient (1 / factor^steps: its lowest coefficient already
    breaks coherence)."""

    measure: Literal["coherence_cliff"] = "coherence_cliff"
    per_start: bool = False
    value_range: ClassVar = (0.0, math.inf)

    def compute(self, view, layers):
        swept = sweep_of(view, self.steering)
        outcome = swept.searched
        unit = swept.start if self.per_start else 1.0
        if math.isnan(unit):
            raise ValueError(f"per_start: steering {self.steering!r} has no geometric sweep (sweep: {{start: ...}})")

        def cliff(trait, coherence, coefs):
            below = coherence[:, 1:] < outcome.threshold
            return np.where(below.any(axis=1), coefs[1:][below.argmax(axis=1)], np.nan) / unit

        return outcome.estimate(view.bootstrap, outcome.cliff() / unit, cliff)
