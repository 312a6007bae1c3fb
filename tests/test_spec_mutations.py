"""Every committed SmolLM2 spec can fail: each check, with its bound moved past what is
observed, must fail (a mutation test of the spec suite itself)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from massive_checks.run import Evaluator, ModelSession
from massive_checks.spec import Bound, load_file

SPEC_FILES = sorted(Path(__file__).parent.parent.glob("specs/smollm2/*.yaml")) + [
    Path(__file__).parent.parent / "specs/any/consistency.yaml"]
SPECS = [spec for path in SPEC_FILES for spec in load_file(path)]


def mutants(bound: Bound, width: int):
    v, kind = bound.value, bound.kind
    if kind == "between":
        span = (v[1] - v[0]) or abs(v[1]) or 1.0
        yield Bound(kind, (v[1] + span, v[1] + 2 * span))
        yield Bound(kind, (v[0] - 2 * span, v[0] - span))
    elif kind == "min":
        yield Bound(kind, v + 10 * abs(v) + 1)
    elif kind == "max":
        yield Bound(kind, v - 10 * abs(v) - 1)
    elif kind == "approx":
        yield Bound(kind, 3 * v if v else 1.0, bound.rel)
    elif kind == "ratio_min":
        yield Bound(kind, 100 * v)
    elif kind == "equals":
        yield Bound(kind, v + 1 if isinstance(v, int) else frozenset({width - 1}) if isinstance(v, frozenset) else "nowhere")
    elif kind == "subset_of":
        yield Bound(kind, frozenset())
    elif kind in ("contains", "not_contains"):
        yield Bound("contains", frozenset({width - 1}))


@pytest.fixture(scope="module")
def session(smollm2):
    session = ModelSession(smollm2)
    for spec in SPECS:
        session.plan_spec(spec, spec.data)
    return session


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_moving_any_bound_past_the_observation_fails_the_spec(session, spec):
    assert Evaluator(spec, session, spec.data).evaluate().passed, "the committed spec itself must pass"
    for index, check in enumerate(spec.checks):
        for bound in mutants(check.bound, session.lm.width):
            mutated = dataclasses.replace(spec, checks=(dataclasses.replace(check, bound=bound),))
            assert not Evaluator(mutated, session, spec.data).evaluate().passed, (index, check.bound, bound)
