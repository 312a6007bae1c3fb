"""The pipeline's records, plain data: what a spec observed on a model (Observation) and what its
bounds made of it (Verdict). Golden, figure and report writers read only these."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from massive_checks.language.intervals import CONFIDENCE, CONTRADICTED, HOLDS, INCONCLUSIVE, Estimate, SharedSet, worst


@dataclass
class ObservedCheck:
    key: str  # stable across rewording and reordering: the check's id, or built from its quantity
    line: int
    description: str  # the quantity in words
    values: dict  # row ("layer 5", "value") -> the value the bound is applied to
    sides: dict | None = None  # compare checks: {"a": {row: value}, "b": {row: value}}
    # rows whose value the model's construction confines: {row: (low, high, why)} (Measure.forced_by)
    forced: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class Observation:
    """Everything one spec observed on one model: the numbers, never a judgement. Built by name."""

    spec_id: str
    claim: str
    model: str
    path: str
    line: int
    source: str
    notes: str
    configs: dict[str, str] = field(default_factory=dict)  # configuration name -> canonical description of its intervention
    checks: list[ObservedCheck] = field(default_factory=list)
    # configuration -> {"top1": [per layer], "top2", "top3", "median"} (paper statistic)
    profiles: dict = field(default_factory=dict)
    setup: dict = field(default_factory=dict)  # model description, dtype, device, versions, data (goldens' meta)
    changes: bool = False  # some check compares configurations
    panels: list = field(default_factory=list)  # panels.Panel its measures draw (figures only; not serialized)
    samples: dict = field(default_factory=dict)  # steering label -> {"prompts": [..], coef: [generated text per prompt]}
    confidence: float = CONFIDENCE  # of the intervals
    claims: tuple[str, ...] = ()  # the catalogue's claims the spec encodes (C1-C18, ...)
    kind: str = "claim"  # claim | measured (objects.Spec.kind)
    identities: dict = field(default_factory=dict)  # configuration -> why it is an identity on this model
    across: tuple[str, ...] = ()  # a spec across models: the models, whose baseline profiles `profiles` holds

    def values(self) -> dict:
        """Flat {key: value} of everything observed: what a golden snapshot stores. A value with
        an interval adds its ends (`| low`, `| high`); a set over units, each element's share."""
        flat = {}
        for check in self.checks:
            for row, value in check.values.items():
                flat.update(flat_value(f"check: {check.key} | {row}", value, self.confidence))
        for config, by_name in self.profiles.items():
            for name, per_layer in by_name.items():
                flat.update({f"{config} {name} (paper statistic) | layer {L}": v for L, v in enumerate(per_layer)})
        for label, by_coef in self.samples.items():
            for coef, texts in shown_texts(by_coef).items():
                flat[f"texts: {label} | coef {coef} | digest"] = texts_digest(texts)
                flat.update({f"texts: {label} | coef {coef} | sample {i + 1}": t for i, t in enumerate(texts[:GOLDEN_SAMPLES])})
        return flat


GOLDEN_SAMPLES = 3  # generated texts per coefficient a golden (and the report page) shows; the digest covers all


def shown_texts(by_coef: dict) -> dict:
    """A configuration's generated texts by coefficient, without its prompts (measures/sweeps.texts_of)."""
    return {coef: texts for coef, texts in by_coef.items() if coef != "prompts"}


def texts_digest(texts: list[str]) -> str:
    """A short fingerprint of every text of one coefficient, in prompt order."""
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]


def flat_value(key: str, value, confidence: float) -> dict:
    if isinstance(value, Estimate):
        flat = {key: value.value}
        interval = value.interval(confidence)
        if interval is not None:
            flat.update({f"{key} | low": interval[0], f"{key} | high": interval[1]})
        return flat
    if isinstance(value, SharedSet):
        return {key: value, **{f"{key} | share of {element}": share for element, share in value.shares.items()}}
    return {key: value}


@dataclass
class Row:
    key: str  # "layer 5", "L5H1", "value"
    expected: str
    observed: object  # an intervals.Estimate (numbers), a set or a label
    verdict: str  # holds | contradicted | inconclusive
    interval: tuple[float, float] | None = None  # None: an exact value (or a set)
    note: str = ""  # why there is no interval, or how many units would decide an inconclusive row

    @property
    def ok(self) -> bool:
        return self.verdict == HOLDS


@dataclass
class CheckVerdict:
    key: str
    description: str
    line: int
    rows: list[Row]
    reference: str | None = None  # the source's value (spec key `reference`), for reports
    band: int = 0  # rows decided on one simultaneous band (0: each row's own interval)

    @property
    def verdict(self) -> str:
        return worst(row.verdict for row in self.rows)

    @property
    def ok(self) -> bool:
        return self.verdict == HOLDS


@dataclass
class Verdict:
    checks: list[CheckVerdict]
    xfail_reason: str | None = None  # the claim is known false on this model: it must be contradicted
    inconclusive_reason: str | None = None  # the claim cannot be decided on this model at this size

    @property
    def outcome(self) -> str:
        """holds (every check holds), contradicted (some check is), or inconclusive."""
        return worst(c.verdict for c in self.checks)

    @property
    def passed(self) -> bool:
        return self.outcome == HOLDS

    @property
    def as_expected(self) -> bool:
        """The outcome the spec declares for this model: holds, contradicted (xfail) or
        inconclusive (its `inconclusive:` key)."""
        expected = CONTRADICTED if self.xfail_reason else INCONCLUSIVE if self.inconclusive_reason else HOLDS
        return self.outcome == expected


# A spec's status on a model: decided by `status_of` and nowhere else; the plugin (pytest's
# outcomes), `massive-checks check` and the reports read it.
PASSED = "passed"  # holds, as the spec says
XFAILED = "xfailed"  # contradicted, as the spec says (a known-false claim: an expected failure confirmed)
UNDECIDED = "undecided"  # inconclusive, as the spec says (undecidable at this size)
XPASSED = "xpassed"  # a known-false claim holds
FAILED = "failed"  # any other outcome than the declared one, or a golden that does not match
ERROR = "error"  # not evaluated (numerics, model or data error): never a verdict
AS_EXPECTED = (PASSED, XFAILED, UNDECIDED)


def status_of(verdict: Verdict, golden_ok: bool = True) -> str:
    """The one decision of pass or fail: the verdict against the outcome the spec declares for this
    model, then the golden snapshot (a verdict as expected on numbers that moved fails)."""
    if not verdict.as_expected:
        return XPASSED if verdict.xfail_reason and verdict.passed else FAILED
    if not golden_ok:
        return FAILED
    return XFAILED if verdict.xfail_reason else UNDECIDED if verdict.inconclusive_reason else PASSED


def format_value(value, confidence: float = CONFIDENCE) -> str:
    """How observed values print in tables: 6 significant digits (with the interval), sets sorted
    (with each element's share of units), None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, Estimate):
        interval = value.interval(confidence)
        text = format_value(value.value)
        return text if interval is None else f"{text} [{format_value(interval[0])}, {format_value(interval[1])}]"
    if isinstance(value, SharedSet):
        return "{" + ", ".join(f"{e} ({share:.0%})" for e, share in value.shares.items()) + "}"
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else f"{value:.6g}"
    if isinstance(value, (set, frozenset, tuple)):
        return "{" + ", ".join(map(str, sorted(value))) + "}" if not isinstance(value, tuple) else str(list(value))
    return str(value)


@dataclass
class Result:
    """A spec on a model: what was observed and the verdict. Unpacks as (observation, verdict)."""

    observation: Observation
    verdict: Verdict

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    @property
    def checks(self) -> list[CheckVerdict]:
        return self.verdict.checks

    def values(self) -> dict:
        return self.observation.values()

    def __iter__(self):
        return iter((self.observation, self.verdict))
