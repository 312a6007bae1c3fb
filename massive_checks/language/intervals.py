"""Estimates with bootstrap intervals over sampling units, and the three verdicts.

A claim's number is computed from sampling units: the sequences of a data set, the prompts of a
steering run, the examples of a contrast set. An `Estimate` is that number on all units plus its
bootstrap replicates: the same number recomputed on B resamples of the units (drawn with
replacement, seeded). Everything derived from estimates (a change between configurations, a
difference, a ratio, a reduction over layers) is computed replicate by replicate, so two estimates
on the same units are resampled together (paired): the same resample of sequences feeds both sides
of `change: [baseline, no_mlp]`. Estimates on different units (the data set vs a contrast set) are
resampled independently, by seeds derived from their keys.

The interval is the percentile interval of the replicates at the run's confidence (default 0.95,
2,000 resamples; `scipy.stats.bootstrap(method="percentile")` is the reference the tests check it
against). A quantity that has no sampling units (a property of the weights, one fixed token) has
no replicates; its measure says why (`Measure.fixed`), and its verdict is exact.

Verdicts (`decide`): a bound *holds* when the whole interval satisfies it, is *contradicted* when
the whole interval violates it, and is *inconclusive* otherwise (and when the value, or any
replicate, is undefined).

Three refinements keep a check's stated confidence its real one:
- a check with several rows (blocks, heads) is decided on a *simultaneous* band (`simultaneous`):
  every row's interval at one per-row level, calibrated so that all rows are covered together in
  the stated share of resamples (the max-statistic of the rows' tail ranks);
- `mean_abs` and `max_abs` over rows are never resampled folded (|x| of a resample pushes noise
  away from 0): their interval is the projection of the signed rows' simultaneous band
  (`Estimate.fold`), conservative and without folding bias; a compare of such numbers combines
  the two sides' intervals, each at half the error rate;
- a count of cases (counterexamples of "every", examples of "some") is exact on the data: it
  has no interval, and names its cases (`Estimate.witnesses`)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

import numpy as np
from numpy.typing import ArrayLike

from massive_checks.base.constants import CONFIDENCE, RESAMPLES  # noqa: F401  (one definition, read by the plugin's options)

HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"
Operand = Union["Estimate", float]  # what estimate arithmetic takes: an estimate or a plain number


class NumericBound(Protocol):
    """What a verdict reads of a bound on a number (spec.objects.Bound)."""

    kind: str
    value: Any
    rel: float


@dataclass(frozen=True)
class Units:
    """n sampling units; estimates on the same key are resampled together (paired).

    `factors`: where the n rows are not independent, the units they are resampled by - per
    factor, each row's level (e.g. its prompt, and its response form). Each factor's levels are
    drawn with replacement, independently, and a row's weight is the product of its levels'
    counts: one factor resamples clusters (a prompt's pos and neg rows together); two crossed
    factors make the two-way ("pigeonhole") bootstrap of Owen 2007, which is conservative."""

    key: str  # identifies the units: e.g. the data set's token-ids hash, a steering run's prompts
    n: int
    kind: str  # "sequences", "prompts", "contrast examples"
    factors: tuple[tuple[int, ...], ...] = ()  # [F][n] each row's level of each factor

    def text(self) -> str:
        return f"{self.n} {self.kind}"


@dataclass
class Bootstrap:
    """The run's bootstrap settings, and the resamples drawn for each set of units (once)."""

    resamples: int = RESAMPLES
    confidence: float = CONFIDENCE
    seed: int = 0
    _weights: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence {self.confidence}: a level between 0.5 and 1, e.g. 0.95")
        if self.resamples < 100:
            raise ValueError(f"resamples {self.resamples}: at least 100 (the default is {RESAMPLES})")

    def weights(self, units: Units) -> np.ndarray:
        """[B, n] how often each unit is drawn in each resample (each row sums to n); with factors,
        the product of each row's levels' counts (Units)."""
        cached = self._weights.get((units.key, units.n))
        if cached is None:
            if units.factors:
                cached = np.ones((self.resamples, units.n))
                for f, levels in enumerate(units.factors):
                    index = np.unique(np.asarray(levels), return_inverse=True)[1]
                    counts = self._counts(f"{units.key}|factor {f}", int(index.max()) + 1)  # [B, levels]
                    cached = cached * counts[:, index]
            else:
                cached = self._counts(units.key, units.n)
            self._weights[(units.key, units.n)] = cached
        return cached

    def _counts(self, key: str, n: int) -> np.ndarray:
        """[B, n] multinomial counts of n things drawn with replacement, seeded by the key."""
        digest = hashlib.sha256(f"{self.seed}|{key}|{n}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        drawn = rng.integers(0, n, size=(self.resamples, n))  # [B, n] unit indices
        counts = np.zeros((self.resamples, n))
        np.add.at(counts, (np.arange(self.resamples)[:, None], drawn), 1.0)
        return counts

    def mean(self, per_unit: ArrayLike, units: Units) -> Estimate:
        """The mean over units of per-unit values [n] (nan: a unit without a value, left out)."""
        x = np.asarray(per_unit, dtype=np.float64).reshape(units.n)
        if units.n == 0:
            return Estimate(math.nan, None, units)
        present = ~np.isnan(x)
        w = self.weights(units)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = float(np.nanmean(x)) if present.any() else math.nan
            replicates = (w @ np.where(present, x, 0.0)) / (w @ present)
        return Estimate(value, replicates, units)

    def cv(self, per_unit: ArrayLike, units: Units) -> Estimate:
        """The coefficient of variation over units of per-unit values [n]: sample standard deviation
        (n - 1) / mean, recomputed in every resample (nan: a unit without a value, left out)."""
        x = np.asarray(per_unit, dtype=np.float64).reshape(units.n)
        present = ~np.isnan(x)
        if present.sum() < 2:
            return Estimate(math.nan, None, units)
        w = self.weights(units) * present  # [B, n]
        x0 = np.where(present, x, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            n = w.sum(axis=1)
            mean = (w @ x0) / n
            variance = ((w @ x0**2) / n - mean**2) * n / (n - 1)
            replicates = np.sqrt(np.maximum(variance, 0.0)) / mean
        value = float(np.std(x[present], ddof=1) / np.mean(x[present]))
        return Estimate(value, replicates, units)

    def total(self, per_unit: ArrayLike, units: Units) -> Estimate:
        """The sum over units of per-unit values [n]."""
        x = np.asarray(per_unit, dtype=np.float64).reshape(units.n)
        return Estimate(float(x.sum()), self.weights(units) @ x, units)

    def ratio_of_totals(self, numerator: ArrayLike, denominator: ArrayLike, units: Units) -> Estimate:
        """sum(numerator) / sum(denominator) over units (e.g. a token-weighted mean loss)."""
        return combine(safe_divide, self.total(numerator, units), self.total(denominator, units))

    def minimum(self, per_unit: ArrayLike, units: Units) -> Estimate:
        """The smallest per-unit value (inf: no unit has one) - e.g. the first layer any
        sequence reaches."""
        x = np.asarray(per_unit, dtype=np.float64).reshape(units.n)
        drawn = self.weights(units) > 0  # [B, n]
        replicates = np.where(drawn, x[None, :], np.inf).min(axis=1)
        return Estimate(float(x.min()) if units.n else math.inf, replicates, units)


@dataclass(frozen=True, eq=False)
class Estimate:
    """A number and its bootstrap replicates (None: no sampling units, an exact value)."""

    value: float
    replicates: np.ndarray | None = None  # [B]
    units: Units | None = None
    reason: str = ""  # why there are no replicates (an exact value, or what is not resampled)
    witnesses: tuple[str, ...] = ()  # a count of cases: the cases (sequence, block, token), first ones
    # Derived from other estimates' intervals, not from its replicates: "mean_abs"/"max_abs" of
    # signed rows (`parts`: the rows), or "ratio"/"difference" of two such sides (`parts`: a, b).
    derived: str = ""
    parts: tuple[Estimate, ...] = ()

    def interval(self, confidence: float) -> tuple[float, float] | None:
        """The percentile interval; (nan, nan) when the value is undefined. A resample where the
        number is undefined (nan: e.g. no coefficient coherent) counts against both ends: it sits
        below the lower end and above the upper one, so more than a tail's share of them makes
        the interval unbounded."""
        if self.derived:
            return derived_interval(self, confidence)
        return self.interval_at((1.0 - confidence) / 2.0)

    def interval_at(self, tail: float) -> tuple[float, float] | None:
        """The interval between the `tail` and 1 - `tail` quantiles of the replicates."""
        if self.replicates is None:
            return None
        if math.isnan(self.value):
            return (math.nan, math.nan)
        undefined = np.isnan(self.replicates)
        if not undefined.any():
            low, high = np.quantile(self.replicates, [tail, 1.0 - tail])
            return float(low), float(high)
        low = np.quantile(np.where(undefined, -np.inf, self.replicates), tail, method="inverted_cdf")
        high = np.quantile(np.where(undefined, np.inf, self.replicates), 1.0 - tail, method="inverted_cdf")
        return float(low), float(high)

    def undefined_share(self) -> float:
        return 0.0 if self.replicates is None else float(np.isnan(self.replicates).mean())

    # Arithmetic is replicate by replicate (combine): a measure may write top1 / (top1 + top2).
    def __add__(self, other: Operand) -> Estimate:
        return combine(np.add, self, other)

    def __radd__(self, other: Operand) -> Estimate:
        return combine(np.add, other, self)

    def __sub__(self, other: Operand) -> Estimate:
        return combine(np.subtract, self, other)

    def __rsub__(self, other: Operand) -> Estimate:
        return combine(np.subtract, other, self)

    def __mul__(self, other: Operand) -> Estimate:
        return combine(np.multiply, self, other)

    def __rmul__(self, other: Operand) -> Estimate:
        return combine(np.multiply, other, self)

    def __truediv__(self, other: Operand) -> Estimate:
        return combine(safe_divide, self, other)

    def __rtruediv__(self, other: Operand) -> Estimate:
        return combine(safe_divide, other, self)

    def __neg__(self) -> Estimate:
        return combine(np.negative, self)

    def __abs__(self) -> Estimate:
        return combine(np.abs, self)


class SharedSet(frozenset[int]):
    """A set observed over sampling units (massive dims, each sequence's top-1 dim, ...), with
    each element's share of the units it was seen in. Bounds read it as a plain set."""

    shares: dict[int, float]
    units: Units | None

    def __new__(cls, shares: dict[int, float], units: Units | None = None) -> SharedSet:
        obj = super().__new__(cls, shares)
        obj.shares, obj.units = dict(sorted(shares.items())), units
        return obj

    @classmethod
    def of_hits(cls, hits: ArrayLike, units: Units) -> SharedSet:
        """hits [n, E] bool: which elements each unit holds -> the set of elements some unit holds."""
        hits = np.asarray(hits, dtype=bool)
        share = hits.mean(axis=0) if len(hits) else np.zeros(hits.shape[1])
        return cls({int(e): float(share[e]) for e in np.flatnonzero(hits.any(axis=0))}, units)

    @classmethod
    def of_labels(cls, labels: ArrayLike, units: Units) -> SharedSet:
        """labels [n]: one element per unit (e.g. each sequence's top-1 dim)."""
        values, counts = np.unique(np.asarray(labels), return_counts=True)
        return cls({int(v): float(c) / units.n for v, c in zip(values, counts)}, units)

    def __reduce__(self) -> tuple[type[SharedSet], tuple[dict[int, float], Units | None]]:  # pickles (xdist) as itself
        return (SharedSet, (self.shares, self.units))


def value_of(x: Any) -> Any:
    """An estimate's value; anything else (a number, a set, a label) as it is."""
    return x.value if isinstance(x, Estimate) else x


def combine(fn: Callable[..., Any], *args: Operand) -> Estimate:
    """fn applied to the values and, replicate by replicate, to the replicates (paired where the
    arguments share units; a plain number is the same in every replicate; an estimate without
    replicates leaves the result without them)."""
    estimates = [a for a in args if isinstance(a, Estimate)]
    if any(e.derived for e in estimates):  # its interval is not its replicates': only compares read it
        raise TypeError("an estimate derived from intervals (a folded mean over rows) combines only in a compare")
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        value = float(fn(*(np.float64(value_of(a)) for a in args)))
        resampled = [e for e in estimates if e.replicates is not None and e.units is not None]
        if not resampled or len(resampled) < len(estimates):  # one side without an interval: none for the result
            return Estimate(value, None, None, "; ".join(dict.fromkeys(e.reason for e in estimates if e.reason)))
        size = len(resampled[0].replicates)  # type: ignore[arg-type]  # replicates checked above
        replicates = np.asarray(
            fn(*(a.replicates if isinstance(a, Estimate) else np.full(size, np.float64(a)) for a in args)), dtype=np.float64
        )
    return Estimate(value, replicates, joint_units([e.units for e in resampled if e.units is not None]))


def joint_units(units: list[Units]) -> Units:
    """The units of a number computed from estimates on these (one set: paired; several: each
    resampled independently, by its own seed)."""
    distinct = {u.key: u for u in units}
    if len(distinct) == 1:
        return units[0]
    return Units(
        " + ".join(sorted(distinct)),
        max(u.n for u in distinct.values()),
        " and ".join(sorted({u.kind for u in distinct.values()})),
    )


def safe_divide(a: Any, b: Any) -> Any:
    """a / b elementwise, inf where only b is 0, nan where both are (numbers or arrays)."""
    return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.where(a != 0, np.inf, np.nan))


def relative_change(before: Operand, after: Operand) -> Estimate:
    """(after - before) / |before| (inf where before is 0 and after is not)."""
    return combine(lambda b, a: safe_divide(a - b, np.abs(b)), before, after)


def difference(before: Operand, after: Operand) -> Estimate:
    return combine(lambda b, a: a - b, before, after)


def ratio(a: Operand, b: Operand) -> Estimate:
    """|a| / |b|."""
    return combine(lambda x, y: safe_divide(np.abs(x), np.abs(y)), a, b)


def reduce(how: str, values: list[Operand]) -> Estimate:
    """mean, max, min, mean_abs or max_abs over a list (a quantity's layers), per replicate; the
    folded ones (mean_abs, max_abs) of resampled rows take their interval from the signed rows'
    simultaneous band (`derived_interval`), not from folded replicates."""
    if how in FOLDS and values and all(isinstance(v, Estimate) and v.replicates is not None for v in values):
        rows = tuple(v for v in values if isinstance(v, Estimate))
        folded = FOLDS[how](np.abs([r.value for r in rows]))
        return Estimate(float(folded), None, rows[0].units, derived=how, parts=rows)
    fn = {
        "mean": lambda *v: np.mean(np.stack(v), axis=0),
        "max": lambda *v: np.max(np.stack(v), axis=0),
        "min": lambda *v: np.min(np.stack(v), axis=0),
        "mean_abs": lambda *v: np.mean(np.abs(np.stack(v)), axis=0),
        "max_abs": lambda *v: np.max(np.abs(np.stack(v)), axis=0),
    }[how]
    return combine(fn, *values)


FOLDS: dict[str, Callable[[Any], Any]] = {"mean_abs": np.mean, "max_abs": np.max}


def simultaneous(estimates: list[Estimate], confidence: float) -> list[tuple[float, float] | None]:
    """Each row's interval such that all rows are covered together at `confidence`: one per-row
    tail level, the (1 - confidence) quantile over resamples of the smallest two-sided tail rank
    any row takes in that resample (the max-statistic band of e.g. Davison & Hinkley 1997, 4.2.6).
    Rows without replicates keep their own (exact) value: None. One row: its usual interval."""
    resampled = [i for i, e in enumerate(estimates) if e.replicates is not None and not math.isnan(e.value)]
    intervals: list[tuple[float, float] | None] = [e.interval(confidence) for e in estimates]
    if len(resampled) < 2:
        return intervals
    tail = band_tail([estimates[i].replicates for i in resampled], confidence)  # type: ignore[misc]
    for i in resampled:
        intervals[i] = estimates[i].interval_at(tail)
    return intervals


def band_tail(replicates: list[np.ndarray], confidence: float) -> float:
    """The per-row tail level of a simultaneous band over rows' replicates ([B] each). An
    undefined replicate is the most extreme (it counts against both ends, as in `interval_at`)."""
    reps = np.stack(replicates)  # [R, B]
    size = reps.shape[1]
    filled = np.where(np.isnan(reps), np.inf, reps)
    ordered = np.sort(filled, axis=1)
    below = np.stack([np.searchsorted(row, values, side="left") for row, values in zip(ordered, filled)])
    above = size - np.stack([np.searchsorted(row, values, side="right") for row, values in zip(ordered, filled)])
    tails = (np.minimum(below, above) + 1) / size  # [R, B] two-sided tail share of each replicate
    tails[np.isnan(reps)] = 0.0
    smallest = tails.min(axis=0)  # [B]
    return float(min(np.quantile(smallest, 1.0 - confidence, method="inverted_cdf"), (1.0 - confidence) / 2.0))


def derived_interval(e: Estimate, confidence: float) -> tuple[float, float]:
    """The interval of an estimate derived from others' intervals (Estimate.derived)."""
    if e.derived in FOLDS:  # |x| folded over rows: the band of the signed rows, projected
        band = [b if b is not None else (r.value, r.value) for b, r in zip(simultaneous(list(e.parts), confidence), e.parts)]
        if any(math.isnan(lo) or math.isnan(hi) for lo, hi in band):
            return (math.nan, math.nan)
        nearest, farthest = zip(*(absolute(lo, hi) for lo, hi in band))
        return float(FOLDS[e.derived](nearest)), float(FOLDS[e.derived](farthest))
    half = 1.0 - (1.0 - confidence) / 2.0  # two sides: each at half the error rate (Bonferroni)
    (a_lo, a_hi), (b_lo, b_hi) = (p.interval(half) or (p.value, p.value) for p in e.parts)
    if e.derived == "difference":  # b - a
        return (b_lo - a_hi, b_hi - a_lo)
    a_abs, b_abs = absolute(a_lo, a_hi), absolute(b_lo, b_hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (float(safe_divide(a_abs[0], b_abs[1])), float(safe_divide(a_abs[1], b_abs[0])))


def absolute(low: float, high: float) -> tuple[float, float]:
    """The interval of |x| for x in [low, high]."""
    return (0.0 if low <= 0.0 <= high else min(abs(low), abs(high))), max(abs(low), abs(high))


def derived_compare(by: str, a: Estimate, b: Estimate) -> Estimate:
    """A compare of two numbers of which one takes its interval from others (a folded mean):
    their intervals combined, each at half the error rate."""
    value = float(b.value - a.value) if by == "difference" else float(safe_divide(abs(a.value), abs(b.value)))
    units = [p.units for p in (a, b) if p.units is not None]
    return Estimate(value, None, joint_units(units) if units else None, derived=by, parts=(a, b))


# --------------------------------------------------------------------------- verdicts


def decide(bound: NumericBound, low: float, high: float) -> str:
    """The verdict of a numeric bound (spec.Bound) on an interval [low, high] (low == high: an
    exact value)."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    kind, target = bound.kind, bound.value
    if kind == "approx":
        kind, target = "between", (target - bound.rel * abs(target), target + bound.rel * abs(target))
    if kind == "equals":
        kind, target = "between", (target, target)
    if kind == "at_least":
        return HOLDS if low >= target else CONTRADICTED if high < target else INCONCLUSIVE
    if kind == "at_most":
        return HOLDS if high <= target else CONTRADICTED if low > target else INCONCLUSIVE
    if kind == "between":
        a, b = target
        if a <= low and high <= b:
            return HOLDS
        return CONTRADICTED if high < a or low > b else INCONCLUSIVE
    raise ValueError(f"bound {kind!r} is not a bound on a number")


def nearest_edge(bound: NumericBound, value: float) -> float | None:
    """The bound's edge nearest to `value` (where an interval around it would have to clear)."""
    kind, target = bound.kind, bound.value
    if kind == "at_least" or kind == "at_most" or kind == "equals":
        return float(target)
    if kind == "approx":
        target = (target - bound.rel * abs(target), target + bound.rel * abs(target))
    if kind in ("between", "approx"):
        return float(min(target, key=lambda edge: abs(edge - value)))
    return None


def units_to_decide(bound: NumericBound, value: float, interval: tuple[float, float], n: int) -> float:
    """A rough number of units whose interval would clear the nearest edge of the bound: the half
    width on that side shrinks as 1 / sqrt(n). inf when the value sits on the edge."""
    edge = nearest_edge(bound, value)
    if edge is None or math.isnan(value) or math.isnan(interval[0]):
        return math.inf
    half = (interval[1] - value) if edge >= value else (value - interval[0])
    distance = abs(edge - value)
    with np.errstate(over="ignore", divide="ignore"):
        needed = n * (half / distance) ** 2 if distance else math.inf
    return max(float(n), math.ceil(needed)) if math.isfinite(needed) else math.inf


def worst(verdicts: Iterable[str]) -> str:
    """Of several rows (or checks): contradicted if any is, holds if all do, else inconclusive."""
    verdicts = list(verdicts)
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return HOLDS if verdicts and all(v == HOLDS for v in verdicts) else INCONCLUSIVE
