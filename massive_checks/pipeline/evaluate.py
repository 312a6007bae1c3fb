"""One spec on one model: plan -> passes (shared, in session.py) -> an Observation -> a Verdict.

`plan(spec, session, data)` announces every configuration's captures before any pass runs, so
each (model, data, intervention) is one forward pass however many specs read it. `observe`
computes every quantity; `decide` applies the bounds. Neither writes anything."""

from __future__ import annotations

import math

import numpy as np

from massive_checks.base.errors import SpecError
from massive_checks.engine import weights
from massive_checks.engine.needs import Needs
from massive_checks.engine.session import ConfigView, ModelSession
from massive_checks.language import contrast, intervals, interventions
from massive_checks.language.data import dataset_revision
from massive_checks.language.intervals import CONTRADICTED, HOLDS, Estimate
from massive_checks.language.interventions import BASELINE
from massive_checks.language.objects import Check, Quantity, Spec
from massive_checks.measures import sweeps
from massive_checks.measures.base import computed
from massive_checks.measures.profile import profile_of
from massive_checks.measures.steering import check_dim_set
from massive_checks.output.records import CheckVerdict, Observation, ObservedCheck, Result, Row, Verdict, format_value


def plan_key(requests: list) -> tuple:
    return tuple(sorted(r.text for r in requests))


def plan(spec: Spec, session: ModelSession, data) -> None:
    """Tell the session what each of the spec's configurations will capture (of a spec across
    models, what its quantities on this session's model read)."""
    lm = session.lm
    quantities = spec.quantities(lm.name)
    per_config: dict[str, Needs] = {"baseline": Needs()}
    for q in quantities:
        needs = computed(q.measure).needs(lm, q.blocks(lm.n_layers))
        for config in q.configs():
            per_config.setdefault(config, Needs()).merge(needs)
    for config, needs in per_config.items():
        requests = spec.interventions.get(config, [])
        session.plan(data, plan_key(requests), needs)
        mean = interventions.mean_sites_of_requests(requests, lm.n_layers)
        slices = interventions.massive_slices_of_requests(requests, lm.n_layers)
        if mean or slices:  # read from the baseline pass before this configuration's own
            session.plan(data, (), Needs(sites=mean, slices=slices))
    configurations = spec.steering_refs(lm.name)
    if configurations:  # the session's first search runs every planned one in step
        sweeps.plan_searches(
            session.view(data, BASELINE, spec.massive, vectors=spec.vectors, steering=spec.steering), configurations
        )
    steered = {spec.steering[name].vector for name in configurations}
    contrast_needs = {(spec.vectors[name].pairs, spec.vectors[name].window) for name in steered}
    for pairs, window in contrast_needs.union(*(q.measure.contrast_needs(spec.vectors) for q in quantities)):
        session.plan(contrast.read(pairs).data(), (), Needs(pooled={window}))  # one pass per contrast set


class Evaluator:
    """Evaluates one spec on one model session."""

    def __init__(self, spec: Spec, session: ModelSession, data):
        self.spec, self.session, self.data, self.lm = spec, session, data, session.lm
        self._views: dict[str, ConfigView] = {}
        self.quantities = spec.quantities(self.lm.name)  # of a spec across models: those on this model
        self.peers: dict[str, Evaluator] = {}  # of a spec across models: the other models' evaluators

    def view(self, config: str) -> ConfigView:
        if config not in self._views:
            requests = self.spec.interventions.get(config, [])
            intervention = self.session.resolve(self.data, requests, self.spec.massive) if requests else BASELINE
            self._views[config] = self.session.view(
                self.data,
                intervention,
                self.spec.massive,
                plan_key(requests),
                self.view,
                self.spec.vectors,
                self.spec.steering,
                by_passage=bool(self.spec.across),  # across models: sequences paired by passage
            )
        return self._views[config]

    @property
    def label(self) -> str:
        """What the result is recorded as: the model's name (a spec across models: its label)."""
        return self.lm.name

    def evaluate(self) -> Result:
        observation = self.observe()
        return Result(
            observation,
            decide(
                self.spec,
                observation,
                self.spec.xfail_for(self.label),
                self.session.bootstrap.confidence,
                self.spec.inconclusive_for(self.label),
            ),
        )

    def observe(self) -> Observation:
        self.validate_against_model()
        checks = [self.observe_check(c) for c in self.spec.checks]
        spec, bootstrap = self.spec, self.session.bootstrap
        return Observation(
            spec_id=spec.id,
            claim=spec.claim,
            model=self.lm.name,
            path=spec.path,
            line=spec.line,
            source=spec.source,
            notes=spec.notes,
            configs=self.configs(),
            checks=checks,
            profiles=self.profiles(),
            setup=self.setup(),
            changes=any(q.between_configs for q in self.quantities),
            panels=self.panels(),
            samples=self.samples(),
            confidence=bootstrap.confidence,
            claims=spec.claims,
            kind=spec.kind,
            identities=self.identities(),
        )

    def identities(self) -> dict[str, str]:
        """Configurations whose intervention changed nothing on this model: {name: why}."""
        return {
            name: f"the intervention is an identity on {self.lm.name}: {name} ({interventions.describe(self.view(name).intervention)}) "
            "changed no value it edits (within a relative 1e-6)"
            for name in sorted(self.spec.configs(self.lm.name) - {"baseline"})
            if self.view(name).identity
        }

    def configs(self) -> dict[str, str]:
        """Each configuration the spec reads here, described by its interventions."""
        return {name: interventions.describe(self.view(name).intervention) for name in sorted(self.spec.configs(self.lm.name))}

    def setup(self) -> dict:
        """What the numbers were measured on: the model, the data (its token ids' hash), the intervals."""
        batch, bootstrap = self.session.batch(self.data), self.session.bootstrap
        return {
            **self.lm.describe(),
            "data": {
                "dataset": self.data.dataset,
                "samples": self.data.samples,
                "seq_len": self.data.seq_len,
                **({} if self.data.bos is None else {"bos": self.data.bos}),
                **({"revision": revision} if (revision := dataset_revision(self.data.dataset)) else {}),
                "ids_hash": batch.ids_hash,
            },
            "intervals": {
                "method": "percentile bootstrap",
                "resamples": bootstrap.resamples,
                "confidence": bootstrap.confidence,
                "seed": bootstrap.seed,
            },
        }

    def validate_against_model(self) -> None:
        """Reject what the model does not have, before any pass: layers past its depth, dims past
        its width (e.g. LLaMA2-7B's dims 1415, 2533 on GPT-2), heads, MLP units, checkpoints. A
        SpecError for this spec alone, naming file, line and key."""
        spec, lm = self.spec, self.lm
        missing = sorted(d for d in spec.named_dims() if d >= lm.width)
        if missing:
            raise SpecError(
                spec.path,
                spec.line,
                "dims",
                f"spec {spec.id!r} names dims {missing} that {lm.name} "
                f"does not have: its residual stream has {lm.width} dims (0-{lm.width - 1})",
            )
        for index, check in enumerate(spec.checks):
            for q in (check.quantity, check.versus):
                if q is None or q not in self.quantities:
                    continue
                try:
                    computed(q.measure).check_model(lm, q.blocks(lm.n_layers))
                except ValueError as exc:  # messages start with the key: "head 5.12: ...", "layer 9: ..."
                    first = str(exc).split(" ", 1)[0].rstrip(":")
                    key = first if first in type(q.measure).model_fields or first == "layers" else "measure"
                    raise SpecError(spec.path, check.line, f"checks[{index}].{key}", str(exc)) from None
        for name, definition in spec.vectors.items():
            try:
                check_dim_set(definition.clean, lm, "clean")
            except ValueError as exc:
                raise SpecError(spec.path, spec.line, f"vectors.{name}.clean", str(exc)) from None
        layers = [(f"vectors.{name}.layer", d.layer) for name, d in spec.vectors.items()]
        layers += [(f"steering.{name}.layer", d.layer) for name, d in spec.steering.items() if d.layer is not None]
        for key, layer in layers:
            try:
                lm.check_layer(layer, f"layer {layer}")
            except ValueError as exc:
                raise SpecError(spec.path, spec.line, key, str(exc)) from None
        for name, requests in spec.interventions.items():
            try:
                interventions.check_against_model(requests, lm.n_layers, lm.n_heads, lm.mlp_width)
                weights.check(lm, requests)
            except ValueError as exc:
                raise SpecError(spec.path, spec.line, f"interventions.{name}", str(exc)) from None

    def profiles(self) -> dict:
        """Per configuration (the baseline always: figures compare with it), the per-layer profile
        every spec carries in results.json, in the paper's statistic."""
        return {name: profile_of(self.view(name)) for name in sorted(self.spec.configs(self.lm.name) | {"baseline"})}

    def panels(self) -> list:
        """Panels the spec's measures draw, from captures their passes already hold, in check order."""
        return [
            panel
            for q in self.quantities
            for panel in computed(q.measure).figure(self.view("baseline"), q.blocks(self.lm.n_layers))
        ]

    def samples(self) -> dict:
        """Texts the spec's measures generated: {steering name: {coef: [text, ..]}}."""
        return {
            name: shown for q in self.quantities for name, shown in computed(q.measure).samples(self.view("baseline")).items()
        }

    # -- quantities
    def value(self, q: Quantity):
        """The quantity's value: the measure on its configuration(s), then its steps in order."""
        between = q.between_configs
        if between is None:
            return self._apply(q.steps, self._raw(q, q.config))
        at = q.steps.index(between)
        before, after = (self._apply(q.steps[:at], self._raw(q, config)) for config in between.value)
        diff = intervals.relative_change if between.kind == "change" else intervals.difference
        changed = {k: diff(before[k], after[k]) for k in before} if isinstance(before, dict) else diff(before, after)
        return self._apply(q.steps[at + 1 :], changed)

    def _raw(self, q: Quantity, config: str):
        try:
            value = q.measure.counted(computed(q.measure).compute(self.view(config), q.blocks(self.lm.n_layers)))
        except ValueError as exc:  # what a model lacks, found only while measuring
            raise SpecError(self.spec.path, self.spec.line, q.measure.name, str(exc)) from None
        if not q.measure.numeric:
            return value
        return (
            {k: as_estimate(v, q.measure) for k, v in value.items()} if isinstance(value, dict) else as_estimate(value, q.measure)
        )

    @staticmethod
    def _apply(steps, value):
        for step in steps:  # only over_layers remain here (validated at collection)
            value = intervals.reduce(step.value, list(value.values()))
        return value

    def value_of(self, q: Quantity):
        """The quantity's value on its own model (a spec across models reads several)."""
        return self.peers[q.model].value(q) if q.model in self.peers else self.value(q)

    def observe_check(self, check: Check) -> ObservedCheck:
        observed = self.value_of(check.quantity)
        description = check.quantity.describe()
        rows = observed if isinstance(observed, dict) else {"value": observed}
        rows = {_row_key(k): v for k, v in rows.items()}
        if check.versus is None:
            return ObservedCheck(check.key(), check.line, description, rows)
        other = self.value_of(check.versus)
        others = {_row_key(k): v for k, v in (other.items() if isinstance(other, dict) else [("value", other)])}
        if set(rows) != set(others):  # across models of different depths
            raise SpecError(
                self.spec.path,
                check.line,
                "compare",
                f"its sides read different blocks ({len(rows)} and {len(others)} rows): compare one value each "
                "(over_layers) or name layers both models have",
            )
        compared = {k: compare(check.by, v, others[k]) for k, v in rows.items()}  # same rows: checked at collection
        description = f"{check.by} of {description}  vs  {check.versus.describe()}"
        sides = {"a": rows, "b": others}
        return ObservedCheck(check.key(), check.line, description, compared, sides, self.forced(check, sides))

    def forced(self, check: Check, sides: dict) -> dict[str, tuple[float, float, str]]:
        """A compare's rows whose value the model's construction confines, {row: (low, high, why)}:
        one side's range given the other's value (Measure.forced_by), as the compared value. Only
        for two measures on the same model, configuration and layers, each one row per layer or one
        layer reduced."""
        a, b = check.quantity, check.versus
        assert b is not None
        layers = a.blocks(self.lm.n_layers)
        same = a.model == b.model and a.config == b.config and layers == b.blocks(self.lm.n_layers)
        if not same or a.between_configs or b.between_configs or (a.steps and len(layers) != 1):
            return {}
        evaluator = self.peers.get(a.model, self) if a.model else self
        view = evaluator.view(a.config)
        given_b, given_a = (computed(x.measure).forced_by(y.measure, view, layers) for x, y in ((a, b), (b, a)))
        forced: dict[str, tuple[float, float, str]] = {}
        for layer in set(given_b) | set(given_a):
            row = "value" if a.steps else _row_key(layer)
            exact_a, exact_b = (intervals.value_of(sides[side][row]) for side in ("a", "b"))
            if layer in given_b:  # a's range, b exact
                low, high, why = given_b[layer]
                ends = [compare(check.by, x, exact_b).value for x in (low, high)]
            else:  # b's range, a exact
                low, high, why = given_a[layer]
                ends = [compare(check.by, exact_a, x).value for x in (low, high)]
            forced[row] = (min(ends), max(ends), why)
        return forced


class AcrossEvaluator(Evaluator):
    """A spec across models (objects.Spec.across): one evaluator per model, each reading the
    quantities on its model, with sequences paired by passage so that a compare resamples the
    same passages on both sides. Its observation is recorded under the spec's label (a+b)."""

    def __init__(self, spec: Spec, sessions: dict[str, ModelSession], data):
        first, *_ = spec.across
        super().__init__(spec, sessions[first], data)
        self.peers = {name: Evaluator(spec, session, data) for name, session in sessions.items()}
        for peer in self.peers.values():
            peer.peers = self.peers

    @property
    def label(self) -> str:
        return self.spec.label

    def observe(self) -> Observation:
        observation = super().observe()
        observation.model = self.label
        observation.across = self.spec.across
        return observation

    def validate_against_model(self) -> None:
        for peer in self.peers.values():
            peer.validate_against_model()

    def configs(self) -> dict[str, str]:
        return {f"{name} @ {model}": text for model, peer in self.peers.items() for name, text in peer.configs().items()}

    def identities(self) -> dict[str, str]:
        return {f"{name} @ {model}": why for model, peer in self.peers.items() for name, why in peer.identities().items()}

    def setup(self) -> dict:
        setups = {model: peer.setup() for model, peer in self.peers.items()}
        return {"model": self.spec.label, "models": setups, "intervals": setups[self.spec.across[0]]["intervals"]}

    def profiles(self) -> dict:
        """Each model's baseline profile, under its name."""
        return {model: profile_of(peer.view("baseline")) for model, peer in self.peers.items()}

    def panels(self) -> list:
        return [panel for peer in self.peers.values() for panel in peer.panels()]

    def samples(self) -> dict:
        return {name: shown for peer in self.peers.values() for name, shown in peer.samples().items()}


def as_estimate(value, measure) -> Estimate:
    """A numeric measure's value as an Estimate: measures return Estimates, or plain numbers
    exactly when they say why they have no interval (Measure.no_interval)."""
    if isinstance(value, Estimate):
        return value
    if not measure.no_interval():
        raise TypeError(
            f"measure {measure.name!r} returned a plain number without saying why it has no interval: "
            f"return an intervals.Estimate (e.g. view.mean(per_sequence)) or set its `fixed` reason"
        )
    return Estimate(math.nan if value is None else float(value), None, None, measure.no_interval())


def decide(
    spec: Spec,
    observation: Observation,
    xfail_reason: str | None = None,
    confidence: float = intervals.CONFIDENCE,
    inconclusive_reason: str | None = None,
) -> Verdict:
    """Each check's bound applied to each of its observed rows: holds, contradicted or
    inconclusive (intervals.decide on its interval; an exact value or a set is decided as it
    is). A check with no rows is inconclusive."""
    verdicts = []
    for check, observed in zip(spec.checks, observation.checks):
        expected = check.bound.text()
        identity = [why for config, why in observation.identities.items() if config.split(" @ ")[0] in check_configs(check)]
        if identity:  # the check reads a configuration that changed nothing: vacuous here
            rows = [
                Row(key, expected, value, intervals.INCONCLUSIVE, None, identity[0]) for key, value in observed.values.items()
            ]
            verdicts.append(CheckVerdict(observed.key, observed.description, observed.line, rows, check.reference))
            continue
        rows = []
        values = list(observed.values.values())
        bands = dict(zip(observed.values, intervals.simultaneous(values, confidence) if is_numeric(values) else []))
        for key, value in observed.values.items():
            text = expected
            if observed.sides is not None:
                a, b = observed.sides["a"][key], observed.sides["b"][key]
                text = f"{check.by} {expected} (a = {format_value(a, confidence)}, b = {format_value(b, confidence)})"
                if reads_named_runs(check) and same_numbers(a, b):  # two names that build the same vector here
                    rows.append(
                        Row(
                            key,
                            text,
                            value,
                            intervals.INCONCLUSIVE,
                            value.interval(confidence),
                            "its two sides are identical on this model: the comparison says nothing",
                        )
                    )
                    continue
            if key in observed.forced and vacuous(check.bound, observed.forced[key]):
                rows.append(confined_row(key, text, value, observed.forced[key], observation.model, confidence))
                continue
            rows.append(decide_row(check.bound, key, text, value, confidence, bands.get(key)))
        if not rows:  # an empty layer range must not pass a check with nothing in it
            rows = [Row("no layers", expected, None, intervals.INCONCLUSIVE)]
        band = sum(1 for v in values if isinstance(v, Estimate) and v.replicates is not None) if len(values) > 1 else 0
        verdicts.append(CheckVerdict(observed.key, observed.description, observed.line, rows, check.reference, band))
    return Verdict(verdicts, xfail_reason, inconclusive_reason)


def confined_row(key: str, expected: str, value: Estimate, forced: tuple, model: str, confidence: float) -> Row:
    low, high, why = forced
    note = f"cannot leave its bound on {model}: {why}, so the compared value lies in [{low:.6g}, {high:.6g}]"
    return Row(key, expected, value, intervals.INCONCLUSIVE, value.interval(confidence), note)


def vacuous(bound, forced: tuple[float, float, str]) -> bool:
    """The (numeric) bound holds over the whole range the model's construction confines the value to."""
    return intervals.decide(bound, forced[0], forced[1]) == HOLDS


def check_configs(check: Check) -> set[str]:
    return set().union(*(q.configs() for q in (check.quantity, check.versus) if q is not None))


def is_numeric(values: list) -> bool:
    return all(isinstance(v, Estimate) for v in values)


def reads_named_runs(check: Check) -> bool:
    """A compare of named vectors or steering runs (which two definitions can make the same on a
    model; equal values of two sites are a finding, not a coincidence of names)."""
    return any(q.measure.vector_refs() or q.measure.steering_refs() for q in (check.quantity, check.versus) if q is not None)


def same_numbers(a: Estimate, b: Estimate) -> bool:
    """Both sides of a compare are the same number in every resample (e.g. two cleanings that
    zero the same dims on this model): a difference of 0 or a ratio of 1 by construction."""
    if a.value != b.value or a.replicates is None or b.replicates is None:
        return False
    return a.units == b.units and bool(np.array_equal(a.replicates, b.replicates, equal_nan=True))


def decide_row(bound, key: str, expected: str, value, confidence: float, band: tuple | None = None) -> Row:
    """A row's verdict on its interval (`band`: its part of the check's simultaneous band)."""
    if not isinstance(value, Estimate):  # a set or a label: exact
        return Row(key, expected, value, HOLDS if bound.holds(value) else CONTRADICTED)
    interval = band if band is not None else value.interval(confidence)
    low, high = interval if interval is not None else (value.value, value.value)
    verdict = intervals.decide(bound, low, high)
    note = (value.reason if interval is None else "") + counterexamples(value)
    if verdict == intervals.INCONCLUSIVE and interval is not None:
        share = value.undefined_share()
        if math.isnan(value.value):
            note = "undefined on these units"
        elif not all(map(math.isfinite, interval)) and share:
            note = f"undefined in {share:.1%} of resamples (more than a tail's share)"
        elif value.units is not None:  # an interval comes from resampled units
            needed = intervals.units_to_decide(bound, value.value, interval, value.units.n)
            note = (
                f"about {needed:.0f} {value.units.kind} would decide it (now {value.units.n})"
                if math.isfinite(needed)
                else "the estimate sits on the bound: no number of units decides it"
            )
    return Row(key, expected, value, verdict, interval, note)


def counterexamples(value: Estimate) -> str:
    """A count's first cases, named (a counterexample decides a claim of "every" or "none")."""
    if not value.witnesses:
        return ""
    return "; first cases: " + ", ".join(value.witnesses)


def compare(by: str, a, b) -> Estimate:
    """|a| / |b| (by ratio) or a - b (by difference), resampled together (paired when a and b
    share units); nan when either value is not a finite number. A side whose interval is derived
    (a folded mean over rows) is compared by intervals, each at half the error rate."""
    if not all(math.isfinite(intervals.value_of(v)) for v in (a, b)):
        return Estimate(math.nan, None, None, "a side is not a finite number")
    if any(isinstance(v, Estimate) and v.derived for v in (a, b)):
        return intervals.derived_compare(by, a, b)
    return intervals.difference(b, a) if by == "difference" else intervals.ratio(a, b)


def _row_key(k) -> str:
    return f"layer {k}" if isinstance(k, int) else str(k)
