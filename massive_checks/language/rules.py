"""The rules a schema cannot say, checked once a spec is parsed: names refer to definitions that
exist and are read, every check can fail (no number compared with itself, no bound that admits
every value), compares compare numbers, expected failures name models the spec runs on. Each
failure is a SpecError at the file, line and key of the raw mapping (`Where`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NoReturn

from massive_checks.base.errors import MassiveChecksError, SpecError
from massive_checks.language import contrast, definitions, judges
from massive_checks.language.measure import MeasureDef, registry
from massive_checks.language.objects import Bound, Check, Quantity, Spec


class Where:
    """Raises SpecError pointing at a key of a raw mapping."""

    def __init__(self, path: str, doc: Any) -> None:
        self.path, self.doc = path, doc

    def fail(self, mapping: Any, key: Any, message: str, prefix: str = "") -> NoReturn:
        line = getattr(mapping, "key_lines", {}).get(key, getattr(mapping, "line", None))
        raise SpecError(self.path, line, prefix + str(key), message)


def across_models(checks: tuple[Check, ...], doc: Any, merged: Any, where: Where) -> tuple[str, ...]:
    """The models a spec across models reads (its compare sides' `model:`), checked: every check of
    such a spec compares two quantities that each name their model, and `models:` is not written
    (the spec runs once, on the models it names, when they are all among --model)."""
    named = tuple(dict.fromkeys(q.model for c in checks for q in (c.quantity, c.versus) if q is not None and q.model))
    if not named:
        return ()
    for i, (raw, check) in enumerate(zip(doc["checks"], checks)):
        if check.versus is None:
            where.fail(raw, "measure", "a spec whose compares name models holds only compares across models", f"checks[{i}].")
        for side, q in (("a", check.quantity), ("b", check.versus)):
            if q.model is None:
                where.fail(
                    raw["compare"][side],
                    "model",
                    f"names no model, while this spec's other compare sides do: write model: <name> (e.g. {named[0]})",
                    f"checks[{i}].compare.{side}.",
                )
    if "models" in merged and merged["models"] != "any":
        where.fail(
            merged,
            "models",
            f"has no effect: a spec across models runs once, on the models its compare sides name ({', '.join(named)})",
        )
    return named


def spec_rules(spec: Spec, model: Any, doc: Any, merged: Any, where: Where) -> None:
    """The rules on a whole spec, after its checks are parsed."""
    _read_definitions(spec, doc, where)
    _unique_check_ids(doc["checks"], spec.checks, where)
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
    identity = _Identity(spec.interventions, spec.vectors, spec.steering)
    for i, (raw, check) in enumerate(zip(doc["checks"], spec.checks)):
        _can_fail(raw, check, f"checks[{i}].", where, identity)
    if "massive" in doc and not _uses_massive_rule(spec):
        where.fail(
            doc,
            "massive",
            "no check or intervention of this spec applies the massive rule "
            f"({', '.join(sorted(n for n, c in registry().items() if c.uses_massive_rule))}, dims:...#massive)",
        )


def used_definitions(checks: tuple[Check, ...], sweeps: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(vector names, steering names) the checks read, a steering run's vector included."""
    measures = [q.measure for c in checks for q in (c.quantity, c.versus) if q is not None]
    used_sweeps = set().union(*(m.steering_refs() for m in measures))
    used = set().union(*(m.vector_refs() for m in measures)) | {sweeps[n].vector for n in used_sweeps}
    return used, used_sweeps


def _read_definitions(spec: Spec, doc: Any, where: Where) -> None:
    """Every vector and steering configuration the spec itself defines is read by a check (a
    typo'd reference would otherwise leave it silently unchecked)."""
    for key, names in (("steering", spec.steering), ("vectors", spec.vectors)):
        for name in doc.get(key, {}):
            if name not in names:
                where.fail(doc[key], name, "is defined here but no check reads it", f"{key}.")


def steering_rules(s: definitions.SteeringDef, node: Any, at: Where, prefix: str, vectors: dict[str, Any]) -> None:
    """A steering configuration's vector is defined, it has coefficients, and its trait words,
    evaluation prompts and judge are known (the built-in sets' own, or given)."""
    if s.vector not in vectors:
        at.fail(
            node,
            "vector",
            f"unknown vector {s.vector!r}; defined under vectors: {', '.join(sorted(vectors)) or 'none'}",
            prefix,
        )
    if not s.coefs and s.sweep is None and s.search is None:
        at.fail(node, "vector", "give search: {..}, coefs: [..] or sweep: {start: .., factor: .., steps: ..}", prefix)
    if s.search is not None and s.search.prompts >= s.prompts:
        at.fail(
            node,
            "search",
            f"search.prompts {s.search.prompts} leaves no prompt to score the best coefficient on "
            f"(prompts: {s.prompts}); the search runs on the first search.prompts, the scores on the rest",
            prefix,
        )
    pairs = vectors[s.vector].pairs
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
            f"contrast set {pairs!r} has no default trait judge: give judge: <vader | refusal | entry point | module:function>",
            prefix,
        )
    try:
        judges.trait_judge(s.judge or judges.DEFAULT_FOR_SET[pairs])
    except ValueError as exc:
        at.fail(node, "judge", str(exc), prefix)


def quantity_rules(
    raw: Any, measure: MeasureDef, prefix: str, where: Where, vectors: Mapping[str, Any], sweeps: Mapping[str, Any]
) -> None:
    """The vectors and steering configurations a measure names exist (and its coef is run)."""
    _steering_reference(raw, measure, prefix, where, sweeps)
    for key in getattr(measure, "vector_fields", ()):
        if getattr(measure, key) not in vectors:
            where.fail(
                raw,
                key,
                f"unknown vector {getattr(measure, key)!r}; defined under vectors: {', '.join(sorted(vectors)) or 'none'}",
                prefix,
            )


def readable_pairs(where: Where, mapping: Any, pairs: str, prefix: str) -> None:
    """A contrast set named in a spec exists and reads (file, line and key otherwise)."""
    try:
        contrast.read(pairs)
    except MassiveChecksError as exc:
        where.fail(mapping, "pairs", str(exc), prefix)


def _steering_reference(raw: Any, measure: MeasureDef, prefix: str, where: Where, sweeps: Mapping[str, Any]) -> None:
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
        if coef is not None and not isinstance(coef, (str, float)):  # coef: {of: <steering>}
            continue
        config = sweeps[name]
        from_calibrated = config.sweep is not None and config.sweep.start in definitions.CALIBRATED
        if coef in definitions.CALIBRATED and not from_calibrated and coef not in config.coefs:
            where.fail(
                raw,
                "coef",
                f"{coef} is run only by a configuration that lists it (steering {name!r}: coefs: [{coef}, ..]) "
                f"or by a sweep from a calibrated start (sweep: {{start: calibrated_without_massive, ...}})",
                prefix,
            )
        if isinstance(coef, float) and config.sweep is None and coef not in config.coefs:
            searched = " (a search's coefficients are scored on its search prompts only)" if config.search else ""
            where.fail(
                raw,
                "coef",
                f"{coef:g} is not among steering {name!r}'s coefs {list(config.coefs)}{searched} "
                f"(or use calibrated / calibrated_without_massive, or {{of: <steering>}})",
                prefix,
            )


def comparable(pair: Any, a: Quantity, b: Quantity, prefix: str, where: Where) -> None:
    """Needs numbers on both sides, and one value each or the same layers each."""
    for side, q in (("a", a), ("b", b)):
        if not q.numeric:
            where.fail(pair, side, f"compare needs numbers; {q.measure.name} is not a number", prefix)
    if a.single != b.single or (not a.single and a.layers_text != b.layers_text):
        where.fail(
            pair,
            "a",
            "compare needs one value on each side (add over_layers) or the same layers on both sides (compared layer by layer)",
            prefix,
        )


def _unique_check_ids(raw_checks: list[Any], parsed: tuple[Check, ...], where: Where) -> None:
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
            q.layers_text,
            steps,
            q.model,
        )


def _can_fail(raw: Any, check: Check, prefix: str, where: Where, identity: _Identity) -> None:
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
        versus = getattr(q.measure, "versus", None)
        if isinstance(versus, str) and not step and identity.config(versus) == identity.config(q.config):
            where.fail(
                side_raw,
                "versus",
                f"{versus!r} resolves to the configuration it is measured on ({q.config!r}): "
                f"{q.measure.name} of a configuration against itself is 0, so the check cannot fail",
                side_prefix,
            )
    if check.bound.kind in ("contains", "excludes") and not check.bound.value:
        where.fail(
            raw,
            check.bound.kind,
            f"{check.bound.kind}: [] is true of every set: the check cannot fail (name the elements)",
            prefix,
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
