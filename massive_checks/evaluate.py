"""One spec on one model: plan -> passes (shared, in session.py) -> an Observation -> a Verdict.

`plan(spec, session, data)` announces every configuration's captures before any pass runs, so
each (model, data, intervention) is one forward pass however many specs read it. `observe`
computes every quantity; `judge` applies the bounds. Neither writes anything."""

from __future__ import annotations

import math

from . import contrast, interventions
from .capture import Needs
from .errors import SpecError
from .interventions import BASELINE
from .measures.profile import profile_of
from .records import CheckVerdict, Observation, ObservedCheck, Result, Row, Verdict, format_value
from .session import ConfigView, ModelSession
from .spec import Check, Quantity, Spec
from .stats import relative_change


def plan_key(requests: list) -> tuple:
    return tuple(sorted(r.text for r in requests))


def plan(spec: Spec, session: ModelSession, data) -> None:
    """Tell the session what each of the spec's configurations will capture."""
    lm = session.lm
    per_config: dict[str, Needs] = {"baseline": Needs()}
    for q in spec.quantities():
        needs = q.measure.needs(lm, layers_of(q, lm.n_layers))
        for config in q.configs():
            per_config.setdefault(config, Needs()).merge(needs)
    for config, needs in per_config.items():
        requests = spec.interventions.get(config, [])
        session.plan(data, plan_key(requests), needs)
        mean = interventions.mean_sites_of_requests(requests, lm.n_layers)
        slices = interventions.massive_slices_of_requests(requests, lm.n_layers)
        if mean or slices:  # read from the baseline pass before this configuration's own
            session.plan(data, (), Needs(sites=mean, slices=slices))
    steered = {spec.steering[name].vector for q in spec.quantities() for name in q.measure.steering_refs()}
    contrast_needs = {(spec.vectors[name].pairs, spec.vectors[name].window) for name in steered}
    for pairs, window in contrast_needs.union(*(q.measure.contrast_needs(spec.vectors) for q in spec.quantities())):
        session.plan(contrast.read(pairs).data(), (), Needs(pooled={window}))  # one pass per contrast set


def layers_of(q: Quantity, n_layers: int) -> list[int]:
    return interventions.parse_layers(q.layers or "all", n_layers)


class Evaluator:
    """Evaluates one spec on one model session."""

    def __init__(self, spec: Spec, session: ModelSession, data):
        self.spec, self.session, self.data, self.lm = spec, session, data, session.lm
        self._views: dict[str, ConfigView] = {}

    def view(self, config: str) -> ConfigView:
        if config not in self._views:
            requests = self.spec.interventions.get(config, [])
            intervention = self.session.resolve(self.data, requests, self.spec.massive) if requests else BASELINE
            self._views[config] = self.session.view(self.data, intervention, self.spec.massive, plan_key(requests), self.view,
                                                    self.spec.vectors, self.spec.steering)
        return self._views[config]

    def evaluate(self) -> Result:
        observation = self.observe()
        return Result(observation, judge(self.spec, observation, self.spec.xfail_for(self.lm.name)))

    def observe(self) -> Observation:
        self.validate_against_model()
        checks = [self.observe_check(c) for c in self.spec.checks]
        configs = {name: interventions.describe(self.view(name).intervention) for name in sorted(self.spec.configs())}
        spec, batch = self.spec, self.session.batch(self.data)
        setup = {**self.lm.describe(), "data": {"dataset": self.data.dataset, "samples": self.data.samples,
                                                 "seq_len": self.data.seq_len, "ids_hash": batch.ids_hash}}
        return Observation(spec.id, spec.claim, self.lm.name, spec.path, spec.line, spec.source, spec.notes, configs, checks,
                           self.profiles(), setup, any(q.between_configs for q in spec.quantities()), self.figure())

    def validate_against_model(self) -> None:
        """Reject what the model does not have, before any pass: layers past its depth, dims past
        its width (e.g. LLaMA2-7B's dims 1415, 2533 on GPT-2), heads, MLP units, checkpoints. A
        SpecError for this spec alone, naming file, line and key."""
        spec, lm = self.spec, self.lm
        missing = sorted(d for d in spec.named_dims() if d >= lm.width)
        if missing:
            raise SpecError(spec.path, spec.line, "dims", f"spec {spec.id!r} names dims {missing} that {lm.name} "
                                                          f"does not have: its residual stream has {lm.width} dims (0-{lm.width - 1})")
        for index, check in enumerate(spec.checks):
            for q in (check.quantity, check.versus):
                if q is None:
                    continue
                try:
                    q.measure.check_model(lm, layers_of(q, lm.n_layers))
                except ValueError as exc:  # messages start with the key: "head 5.12: ...", "layer 9: ..."
                    first = str(exc).split(" ", 1)[0].rstrip(":")
                    key = first if first in type(q.measure).model_fields or first == "layers" else "measure"
                    raise SpecError(spec.path, check.line, f"checks[{index}].{key}", str(exc)) from None
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
            except ValueError as exc:
                raise SpecError(spec.path, spec.line, f"interventions.{name}", str(exc)) from None

    def profiles(self) -> dict:
        """Per configuration (the baseline always: figures compare with it), the per-layer profile
        every spec carries in results.json, in the paper's statistic."""
        return {name: profile_of(self.view(name)) for name in sorted(self.spec.configs() | {"baseline"})}

    def figure(self) -> dict:
        """Panels the spec's measures draw, from captures their passes already hold."""
        panels: dict = {}
        for q in self.spec.quantities():
            for name, data in q.measure.figure(self.view("baseline"), layers_of(q, self.lm.n_layers)).items():
                if isinstance(data, dict) and isinstance(panels.get(name), dict):  # per-layer / per-vector entries
                    panels[name].update(data)
                else:
                    panels.setdefault(name, data)
        return panels

    # -- quantities
    def value(self, q: Quantity):
        """The quantity's value: the measure on its configuration(s), then its steps in order."""
        between = q.between_configs
        if between is None:
            return self._apply(q.steps, self._raw(q, q.config))
        at = q.steps.index(between)
        before, after = (self._apply(q.steps[:at], self._raw(q, config)) for config in between.value)
        diff = relative_change if between.kind == "change" else (lambda a, b: b - a)
        changed = {k: diff(before[k], after[k]) for k in before} if isinstance(before, dict) else diff(before, after)
        return self._apply(q.steps[at + 1:], changed)

    def _raw(self, q: Quantity, config: str):
        try:
            return q.measure.compute(self.view(config), layers_of(q, self.lm.n_layers))
        except ValueError as exc:  # what a model lacks, found only while measuring
            raise SpecError(self.spec.path, self.spec.line, q.measure.name, str(exc)) from None

    @staticmethod
    def _apply(steps, value):
        for step in steps:  # only over_layers remain here (validated at collection)
            value = over_layers(step.value, list(value.values()))
        return value

    def observe_check(self, check: Check) -> ObservedCheck:
        observed = self.value(check.quantity)
        description = check.quantity.describe()
        rows = observed if isinstance(observed, dict) else {"value": observed}
        rows = {_row_key(k): v for k, v in rows.items()}
        if check.versus is None:
            return ObservedCheck(check.key(), check.line, description, rows)
        other = self.value(check.versus)
        others = {_row_key(k): v for k, v in (other.items() if isinstance(other, dict) else [("value", other)])}
        compared = {k: compare(check.by, v, others[k]) for k, v in rows.items()}  # same rows: checked at collection
        description = f"{check.by} of {description}  vs  {check.versus.describe()}"
        return ObservedCheck(check.key(), check.line, description, compared, {"a": rows, "b": others})


def judge(spec: Spec, observation: Observation, xfail_reason: str | None = None) -> Verdict:
    """Each check's bound applied to each of its observed rows; a check with no rows fails."""
    verdicts = []
    for check, observed in zip(spec.checks, observation.checks):
        expected = check.bound.text()
        rows = []
        for key, value in observed.values.items():
            text = expected
            if observed.sides is not None:
                a, b = observed.sides["a"][key], observed.sides["b"][key]
                text = f"{check.by} {expected} (a = {format_value(a)}, b = {format_value(b)})"
            rows.append(Row(key, text, value, check.bound.holds(value)))
        if not rows:  # an empty layer range must not pass a check with nothing in it
            rows = [Row("no layers", expected, None, False)]
        verdicts.append(CheckVerdict(observed.key, observed.description, observed.line, rows))
    return Verdict(verdicts, xfail_reason)


def compare(by: str, a, b) -> float:
    """|a| / |b| (by ratio) or a - b (by difference); nan when either is not a finite number."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (a, b)):
        return math.nan
    if by == "difference":
        return float(a - b)
    return abs(a) / abs(b) if b else (math.inf if a else math.nan)


def over_layers(how: str, values: list[float]) -> float:
    absolute = [abs(v) for v in values]
    return {"mean": lambda: sum(values) / len(values), "max": lambda: max(values), "min": lambda: min(values),
            "mean_abs": lambda: sum(absolute) / len(values), "max_abs": lambda: max(absolute)}[how]()


def _row_key(k) -> str:
    return f"layer {k}" if isinstance(k, int) else str(k)
