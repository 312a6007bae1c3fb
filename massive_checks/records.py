"""The pipeline's records, plain data: what a spec observed on a model (Observation) and what its
bounds made of it (Verdict). Golden, figure and report writers read only these."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

STATISTIC_TEXT = {  # how every layer-wise number is computed; written into results, goldens, figures
    "paper": "per sequence: top-k (and median) of its flattened |block output| over real tokens; "
             "then the mean over sequences (Sun et al. 2024); ratio = mean top-1 / mean median",
    "max_over_sequences": "top-k cells of the per-(token, dim) maximum of |a| over sequences",
}


@dataclass
class ObservedCheck:
    key: str  # stable across rewording and reordering: the check's id, or built from its quantity
    line: int
    description: str  # the quantity in words
    values: dict  # row ("layer 5", "value") -> the value the bound is applied to
    sides: dict | None = None  # compare checks: {"a": {row: value}, "b": {row: value}}


@dataclass
class Observation:
    """Everything one spec observed on one model: the numbers, never a judgement."""

    spec_id: str
    claim: str
    model: str
    path: str
    line: int
    source: str
    notes: str
    configs: dict[str, str]  # configuration name -> canonical description of its intervention
    checks: list[ObservedCheck]
    profiles: dict  # configuration -> {"top1": [per layer], "top2", "top3", "median"} (paper statistic)
    setup: dict = field(default_factory=dict)  # model description, dtype, device, versions, data (goldens' meta)
    changes: bool = False  # some check compares configurations
    figure: dict = field(default_factory=dict)  # panel name -> arrays, for figures only (not serialized)

    def values(self) -> dict:
        """Flat {key: value} of everything observed: what a golden snapshot stores."""
        flat = {f"check: {check.key} | {row}": value for check in self.checks for row, value in check.values.items()}
        for config, by_name in self.profiles.items():
            for name, per_layer in by_name.items():
                flat.update({f"{config} {name} (paper statistic) | layer {L}": v for L, v in enumerate(per_layer)})
        return flat


@dataclass
class Row:
    key: str  # "layer 5", "L5H1", "value"
    expected: str
    observed: object
    ok: bool


@dataclass
class CheckVerdict:
    key: str
    description: str
    line: int
    rows: list[Row]

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(row.ok for row in self.rows)


@dataclass
class Verdict:
    checks: list[CheckVerdict]
    xfail_reason: str | None = None  # the claim is known false on this model

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)


def format_value(value) -> str:
    """How observed values print in tables: 6 significant digits, sets sorted, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
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
