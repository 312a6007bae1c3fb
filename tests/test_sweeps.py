"""Steering sweeps as spec measures (issue 10): batched sweeps equal one run at a time; the sweep
reads (best coherent effect, best coef, cliff, coherence at a coef) by hand; spec measures equal a
direct steer.sweep; one sweep per configuration per session; bad steering specs name file, line
and key; figures and reports show the sweep."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from massive_checks.base.errors import SpecError
from massive_checks.language import contrast, judges, load_file
from massive_checks.language.definitions import Search, Sweep
from massive_checks.language.intervals import Bootstrap
from massive_checks.measures.steering import activation_norm, vector_of
from massive_checks.measures.sweeps import SweepOutcome, _Climb, sweep_of
from massive_checks.output import results
from massive_checks.pipeline.evaluate import Evaluator, plan
from massive_checks.steering import coherence, generation, scoring, steer
from massive_checks.steering.steer import SteeringResult, Texts


def _prompts(lm, n=3):
    """(token ids, texts) of the first n refusal evaluation prompts."""
    texts = contrast.eval_prompts("refusal", n)
    return [lm.tokenizer(t)["input_ids"] for t in texts], texts


def _judging(session):
    return steer.Judging("refusal", judges.refusal, coherence.fluency_model(session))


def _trait(lm):
    return {k: [lm.tokenizer(w, add_special_tokens=False)["input_ids"] for w in v] for k, v in contrast.TRAITS["refusal"].items()}


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])
def test_a_batched_sweep_equals_each_run_alone(session_for, name):
    """Rows of different vectors and coefs share batches (chunks of 4 rows cut runs apart); each
    run's scores and texts equal the run swept alone."""
    session = session_for(name, judge_model="tiny-gpt2")
    lm, judging = session.lm, _judging(session)
    g = torch.Generator().manual_seed(0)
    runs = [(torch.randn(lm.width, generator=g), c) for c in (0.0, 8.0, 30.0)] + [(torch.randn(lm.width, generator=g), 15.0)]
    (prompts, texts), trait = _prompts(lm), _trait(lm)
    together = steer.sweep(lm, runs, 1, prompts, texts, trait, 5, judging, batch_size=4)
    for run, batched in zip(runs, together):
        (alone,) = steer.sweep(lm, [run], 1, prompts, texts, trait, 5, judging, batch_size=64)
        assert batched.texts == alone.texts
        assert batched.trait == pytest.approx(alone.trait, rel=1e-4, abs=1e-6)
        assert batched.trait_logit == pytest.approx(alone.trait_logit, rel=1e-4, abs=1e-6)
        assert batched.coherence == pytest.approx(alone.coherence, rel=1e-4, nan_ok=True)
    said = [coherence.says_something(t) for t in together[0].texts]  # a random model may say nothing: 0
    assert together[0].coherence == pytest.approx(100.0 * sum(said) / len(said))
    assert together[2].texts != together[0].texts  # a strong coefficient changes what is generated


def test_a_run_already_generated_is_read_not_generated_again(session_for, monkeypatch):
    """Two sweeps with an equal vector (another tensor, the same values) at a shared coefficient:
    the second generates only its new run, and reads the shared one with the same scores."""
    session = session_for("tiny-llama", judge_model="tiny-gpt2")
    lm, judging = session.lm, _judging(session)
    vector = torch.randn(lm.width, generator=torch.Generator().manual_seed(1))
    (prompts, texts), trait = _prompts(lm), _trait(lm)
    rows: list[int] = []
    real = scoring.with_trait_log_odds
    monkeypatch.setattr(steer, "with_trait_log_odds", lambda lm, p, *a: rows.append(len(p)) or real(lm, p, *a))
    generated: dict = {}
    first = steer.sweep(lm, [(vector, 0.0), (vector, 20.0)], 1, prompts, texts, trait, 5, judging, generated=generated)
    steered_rows = sum(rows)
    runs = [(vector.clone(), 20.0), (vector, 9.0), (vector, 9.0)]
    second = steer.sweep(lm, runs, 1, prompts, texts, trait, 5, judging, baseline=first[0].judged, generated=generated)
    assert sum(rows) - steered_rows == len(prompts)  # the coef-9 run, once
    assert second[0].judged == first[1].judged and second[1].judged == second[2].judged
    before = sum(rows)
    third = steer.sweep(lm, [(vector, 20.0)], 2, prompts, texts, trait, 5, judging, baseline=first[0].judged, generated=generated)
    assert sum(rows) - before == len(prompts) and third[0].trait_logit != first[1].trait_logit  # another layer: another run


def test_log_odds_left_out_then_asked_for_equal_a_sweep_with_them(session_for, monkeypatch):
    """A sweep without logits computes no log-odds (trait_logit nan, Texts.logits None); a later
    sweep that asks for them on the same runs generates nothing again, and its scores equal a
    sweep that computed everything at once."""
    session = session_for("tiny-llama", judge_model="tiny-gpt2")
    lm, judging = session.lm, _judging(session)
    vector = torch.randn(lm.width, generator=torch.Generator().manual_seed(2))
    (prompts, texts), trait = _prompts(lm), _trait(lm)
    runs = [(vector, 0.0), (vector, 6.0), (vector, 25.0)]
    generated: dict = {}
    odds_rows: list[int] = []
    real_odds = scoring.trait_log_odds
    monkeypatch.setattr(steer, "trait_log_odds", lambda lm, p, *a, **kw: odds_rows.append(len(p)) or real_odds(lm, p, *a, **kw))
    without = steer.sweep(lm, runs, 1, prompts, texts, trait, 5, judging, generated=generated, logits=False)
    assert odds_rows == [] and all(math.isnan(r.trait_logit) and r.judged.logits is None for r in without)
    generate = generation.generate
    monkeypatch.setattr(steer, "generate", lambda *a, **kw: pytest.fail("generated again"))
    later = steer.sweep(lm, runs, 1, prompts, texts, trait, 5, judging, baseline=without[0].judged, generated=generated)
    monkeypatch.setattr(steer, "generate", generate)
    at_once = steer.sweep(lm, runs, 1, prompts, texts, trait, 5, judging)
    for a, b, c in zip(without, later, at_once):
        assert a.texts == b.texts == c.texts and a.trait == b.trait == c.trait and a.judged.losses == b.judged.losses
        assert b.judged.logits == pytest.approx(c.judged.logits, rel=1e-5, abs=1e-6)
    assert len(set(r.trait_logit for r in at_once)) > 1  # the coefs move the log-odds
    outcome = SweepOutcome(tuple(without), 70.0, {})
    with pytest.raises(ValueError, match="without the trait log-odds"):
        outcome.estimate(Bootstrap(), 0.0, lambda trait, coherence, coefs: trait[:, 0], "logit")


def _result(coef, trait, coherence):
    return SteeringResult(coef, trait, trait, coherence, Texts((), (), (trait,), (trait,), (1.0,), (1.0,)))


def test_sweep_reads_by_hand():
    outcome = SweepOutcome(
        (_result(0, 10, 100), _result(1, 20, 95), _result(2, 60, 71), _result(4, 90, 40), _result(8, 95, 75)),
        70.0,
        {"calibrated": 8.0, "calibrated_without_massive": 2.0},
    )
    assert outcome.best().coef == 8  # coherence is not monotonic: the best coherent one counts
    assert outcome.effect(outcome.best()) == 85
    assert outcome.cliff() == 4
    assert outcome.at("calibrated_without_massive").coherence == 71
    with pytest.raises(ValueError, match="not a coefficient of this sweep"):
        outcome.at(3.0)
    nothing = SweepOutcome((_result(0, 10, 100), _result(5, 90, 20)), 70.0, {})
    assert nothing.best() is None and nothing.cliff() == 5
    assert math.isnan(SweepOutcome((_result(0, 10, 100), _result(1, 12, 99)), 70.0, {}).cliff())
    assert Sweep(start=10.0, factor=2.0, steps=2).coefs(10.0) == (2.5, 5.0, 10.0, 20.0, 40.0)


SPEC = """\
claim: steering on a tiny model
vectors:
  md: {pairs: refusal, layer: 1, window: "first:5", method: mean_diff}
  pr: {pairs: refusal, layer: 1, window: "first:5", method: probe}
steering:
  md: {vector: md, coefs: [3, 30, 300], prompts: 3, max_new_tokens: 4}
  search: {vector: pr, sweep: {start: calibrated_without_massive, factor: 2, steps: 1}, prompts: 3, max_new_tokens: 4,
           threshold: 60}
checks:
  - {id: effect, measure: trait_effect, steering: md, at_least: -99}
  - {id: at30, measure: trait_effect, steering: md, coef: 30, at_least: -99}
  - {id: logit30, measure: trait_effect, steering: md, coef: 30, score: logit, at_least: -99}
  - {id: coherence, measure: coherence, steering: md, coef: 300, at_least: 1}
  - {id: best, measure: best_coef, steering: search, at_least: 1}
  - {id: cliff, measure: coherence_cliff, steering: search, at_least: 1}
  - {id: calibrated, measure: coherence, steering: search, coef: calibrated, at_least: 1}
"""


def test_spec_measures_equal_a_direct_sweep_and_each_sweep_runs_once(session_for, tmp_path, monkeypatch):
    session = session_for("tiny-llama")
    lm = session.lm
    (tmp_path / "s.yaml").write_text(SPEC + "---\n" + SPEC.replace("claim:", "id: again\nclaim:"))
    first, second = load_file(tmp_path / "s.yaml")
    generated_rows, odds_rows = [], []
    real_generate, real_odds = generation.generate, scoring.trait_log_odds
    monkeypatch.setattr(
        steer, "generate", lambda lm, p, *a, **kw: generated_rows.append(len(p)) or real_generate(lm, p, *a, **kw)
    )
    monkeypatch.setattr(steer, "trait_log_odds", lambda lm, p, *a, **kw: odds_rows.append(len(p)) or real_odds(lm, p, *a, **kw))
    for spec in (first, second):
        plan(spec, session, spec.data)
    outcomes = [Evaluator(s, session, s.data).evaluate() for s in (first, second)]
    observed = [{c.key: next(iter(c.values.values())).value for c in o.observation.checks} for o in outcomes]
    assert observed[0] == pytest.approx(observed[1], nan_ok=True)
    view = session.view(first.data, vectors=first.vectors, steering=first.steering)
    search_runs = len(sweep_of(view, "search").results) - 1  # memoized: nothing runs again
    # Each (run, prompt) row is generated once a session, however many specs and scores read it
    # (3 prompts: the unsteered model, md's 3 coefs, search's runs); the trait log-odds run only
    # for md, the one configuration a `score: logit` check reads, after its generations.
    assert sum(generated_rows) == 3 * (1 + 3 + search_runs)
    assert sum(odds_rows) == 3 * (1 + 3)
    (prompts, texts), trait, judging = _prompts(lm), _trait(lm), _judging(session)
    md = steer.sweep(
        lm, [(vector_of(view, "md").values, c) for c in (0.0, 3.0, 30.0, 300.0)], 1, prompts, texts, trait, 4, judging
    )
    coherent = [r for r in md[1:] if r.coherence >= 70]
    assert observed[0]["effect"] == pytest.approx(
        max(r.trait for r in coherent) - md[0].trait if coherent else math.nan, nan_ok=True
    )
    assert observed[0]["at30"] == pytest.approx(md[2].trait - md[0].trait)
    assert observed[0]["logit30"] == pytest.approx(md[2].trait_logit - md[0].trait_logit)
    assert md[0].texts and all(0 <= t <= 100 for r in md for t in r.judged.traits)
    record = results.outcome_record(*outcomes[0])  # results.json: 3 texts per coef; "texts": all (report.py files them)
    assert set(record["samples"]) == {"md (3 prompts)", "search (3 prompts)"}
    assert record["samples"]["md (3 prompts)"]["0"] == list(md[0].texts[:3])
    assert record["texts"]["md (3 prompts)"]["30"] == list(md[2].texts) and record["texts"]["md (3 prompts)"]["prompts"] == texts
    assert observed[0]["coherence"] == pytest.approx(md[3].coherence)
    pairs_view = view.contrast("refusal")
    start = activation_norm(pairs_view, "first:5", 1, "massive").value
    calibrated = activation_norm(pairs_view, "first:5", 1, None).value
    coefs = sorted({start / 2, start, start * 2, calibrated})
    search = steer.sweep(lm, [(vector_of(view, "pr").values, c) for c in [0.0] + coefs], 1, prompts, texts, trait, 4, judging)
    by_coef = {r.coef: r for r in search[1:]}
    assert observed[0]["calibrated"] == pytest.approx(
        next(r.coherence for c, r in by_coef.items() if math.isclose(c, calibrated))
    )
    coherent = [r for r in search[1:] if r.coherence >= 60]
    assert observed[0]["best"] == pytest.approx(max(coherent, key=lambda r: r.trait).coef if coherent else math.nan, nan_ok=True)
    below = [r.coef for r in search[1:] if r.coherence < 60]
    assert observed[0]["cliff"] == pytest.approx(below[0] if below else math.nan, nan_ok=True)


ONE = """\
claim: one coefficient
vectors:
  md: {pairs: refusal, layer: 1, window: "first:5", method: mean_diff}
steering:
  md: {vector: md, coefs: [30], prompts: 3, max_new_tokens: 4}
checks:
  - {measure: trait_effect, steering: md, coef: 30, BOUND}
"""


def test_steering_checks_fail_from_each_side(session_for, tmp_path):
    """The measured effect at a coef, with bounds just clear of its interval on either side: it
    holds from one side and is contradicted from the other; a bound at its value is inconclusive."""
    session = session_for("tiny-llama")
    (tmp_path / "s.yaml").write_text(SPEC)
    spec = load_file(tmp_path / "s.yaml")[0]
    value = next(c for c in Evaluator(spec, session, spec.data).evaluate().observation.checks if c.key == "at30").values["value"]
    low, high = value.interval(0.95)
    cases = [
        (f"at_least: {low - 0.01}", "holds"),
        (f"at_least: {high + 0.01}", "contradicted"),
        (f"at_most: {high + 0.01}", "holds"),
        (f"at_most: {low - 0.01}", "contradicted"),
    ]
    if high > low:
        cases.append((f"at_least: {value.value}", "inconclusive"))
    for bound, outcome in cases:
        (tmp_path / "one.yaml").write_text(ONE.replace("BOUND", bound))
        one = load_file(tmp_path / "one.yaml")[0]
        assert Evaluator(one, session, one.data).evaluate().verdict.outcome == outcome, bound


BASE = "claim: c\nvectors:\n  v: {pairs: refusal, layer: 1, window: all, method: mean_diff}\n"
BAD = [
    (
        BASE + "steering:\n  s: {vector: w, coefs: [1]}\nchecks:\n  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        5,
        "steering.s.vector",
        "unknown vector 'w'",
    ),
    (
        BASE + "steering:\n  s: {vector: v}\nchecks:\n  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        5,
        "steering.s.vector",
        "give search: {..}, coefs",
    ),
    (
        BASE + "steering:\n  s: {vector: v, coefs: [1]}\nchecks:\n  - {measure: best_coef, steering: t, at_least: 1.0e-6}\n",
        7,
        "checks[0].steering",
        "unknown steering configuration 't'",
    ),
    (
        BASE
        + "steering:\n  s: {vector: v, coefs: [1, 2]}\nchecks:\n  - {measure: coherence, steering: s, coef: 3, at_least: 1.0e-6}\n",
        7,
        "checks[0].coef",
        "not among steering 's'",
    ),
    (
        BASE
        + "steering:\n  s: {vector: v, coefs: [1]}\nchecks:\n  - {measure: coherence, steering: s, coef: calibrated, at_least: 1.0e-6}\n",
        7,
        "checks[0].coef",
        "run only by a configuration that lists it",
    ),
    (
        BASE + "steering:\n  s: {vector: v, coefs: [1]}\n  t: {vector: v, coefs: [1]}\nchecks:\n"
        "  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        6,
        "steering.t",
        "no check reads it",
    ),
    (
        BASE
        + "steering:\n  s: {vector: v, coefs: [1], prompts: 500}\nchecks:\n  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        5,
        "steering.s.prompts",
        "steering asks for 500 prompts",
    ),
    (
        BASE
        + "steering:\n  s: {vector: v, coefs: [1], judge: nonsense}\nchecks:\n  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        5,
        "steering.s.judge",
        "not a built-in judge",
    ),
    (
        BASE + "steering:\n  s: {vector: v, coefs: [1], prompt_set: no_such.txt}\nchecks:\n"
        "  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        5,
        "steering.s.prompt_set",
        "no such file",
    ),
    (
        BASE
        + "steering:\n  s: {vector: v, coefs: [1], temperature: 1}\nchecks:\n  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        5,
        "steering.s.temperature",
        "unknown key; allowed",
    ),
    (
        BASE
        + "steering:\n  s: {vector: v, sweep: {start: 5, factor: 1}}\nchecks:\n  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        5,
        "steering.s.sweep.factor",
        "greater than 1",
    ),
    (
        BASE
        + "steering:\n  s: {vector: v, search: {factor: 2}}\nchecks:\n  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        5,
        "steering.s.search.factor",
        "less than or equal to 1.5",
    ),
    (
        BASE
        + "steering:\n  s: {vector: v, search: {prompts: 12}, prompts: 12}\nchecks:\n  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        5,
        "steering.s.search",
        "leaves no prompt to score",
    ),
    (
        BASE
        + "steering:\n  s: {vector: v, search: {}}\nchecks:\n  - {measure: trait_effect, steering: s, coef: 2, at_least: 1.0e-6}\n",
        7,
        "checks[0].coef",
        "scored on its search prompts only",
    ),
    (
        BASE + "steering:\n  s: {vector: v, coefs: [1], positions: middle}\nchecks:\n"
        "  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n",
        5,
        "steering.s.positions",
        "must be one of",
    ),
]


@pytest.mark.parametrize("body, line, key, message", BAD)
def test_a_bad_steering_spec_names_file_line_and_key(tmp_path, body, line, key, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(SpecError) as info:
        load_file(path)
    assert (info.value.line, info.value.key) == (line, key), str(info.value)
    assert message in str(info.value)


def test_a_contrast_file_without_trait_words_needs_them(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"text": f"Q{i}: A", "prompt": f"Q{i}:", "response": " A", "label": lab}) + "\n"
            for i in range(10)
            for lab in ("pos", "neg")
        )
    )
    body = (
        f"claim: c\nvectors:\n  v: {{pairs: {pairs}, layer: 1, window: all, method: mean_diff}}\n"
        "steering:\n  s: {vector: v, coefs: [1], prompts: 2}\nchecks:\n  - {measure: best_coef, steering: s, at_least: 1.0e-6}\n"
    )
    (tmp_path / "a.yaml").write_text(body)
    with pytest.raises(SpecError, match="no built-in trait words") as info:
        load_file(tmp_path / "a.yaml")
    assert info.value.key == "steering.s.vector"
    with_words = body.replace("prompts: 2}", "prompts: 2, trait: {pos: [' yes'], neg: [' no']}}")
    (tmp_path / "b.yaml").write_text(with_words)
    with pytest.raises(SpecError, match="no built-in evaluation prompts") as info:  # nor prompts to steer on
        load_file(tmp_path / "b.yaml")
    (tmp_path / "questions.txt").write_text("Q: where?\nQ: when?\n")
    with_prompts = with_words.replace("prompts: 2,", f"prompts: 2, prompt_set: {tmp_path / 'questions.txt'},")
    (tmp_path / "c.yaml").write_text(with_prompts)
    with pytest.raises(SpecError, match="no default trait judge") as info:  # nor a judge of its trait
        load_file(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text(with_prompts.replace("prompts: 2,", "prompts: 2, judge: vader,"))
    loaded = load_file(tmp_path / "d.yaml")[0].steering["s"]
    assert (loaded.trait.pos, loaded.trait.neg, loaded.judge) == ((" yes",), (" no",), "vader")


SEARCH = """\
claim: a search to the cliff on a tiny model
vectors:
  md: {pairs: refusal, layer: 1, window: "first:5", method: mean_diff}
  pr: {pairs: refusal, layer: 1, window: "first:5", method: probe}
steering:
  md: {vector: md, search: {prompts: 3, start: START, limit: LIMIT}, prompts: 5, max_new_tokens: 4, threshold: THRESHOLD}
  pr: {vector: pr, search: {prompts: 3, start: START, limit: LIMIT}, prompts: 5, max_new_tokens: 4, threshold: THRESHOLD}
checks:
  - {id: effect, measure: trait_effect, steering: md, at_least: -99}
  - {id: where_pr_peaks, measure: trait_effect, steering: md, coef: {of: pr}, at_least: -99}
  - {id: best, measure: best_coef, steering: md, at_least: 1.0e-6}
  - {id: cliff, measure: coherence_cliff, steering: md, at_least: 1.0e-6}
"""


def _searched(session_for, tmp_path, start, limit, threshold):
    session = session_for("tiny-llama")
    body = SEARCH.replace("START", str(start)).replace("LIMIT", str(limit)).replace("THRESHOLD", str(threshold))
    (tmp_path / "s.yaml").write_text(body)
    spec = load_file(tmp_path / "s.yaml")[0]
    observation = Evaluator(spec, session, spec.data).evaluate().observation
    view = session.view(spec.data, vectors=spec.vectors, steering=spec.steering)
    values = {c.key: next(iter(c.values.values())) for c in observation.checks}
    return session, view, values, observation


def test_a_search_climbs_by_the_factor_to_its_first_incoherent_coefficient_and_scores_its_pick_elsewhere(session_for, tmp_path):
    """Coherence 99 on a random model: nearly every steered text breaks it, so the cliff comes
    early; the search stops there, and its pick is scored on the 2 prompts it did not see."""
    session, view, values, observation = _searched(session_for, tmp_path, 0.01, 8, 99)
    outcome = sweep_of(view, "md")
    search = outcome.search
    coefs = [r.coef for r in search.results[1:]]
    assert all(b / a == pytest.approx(1.5) for a, b in zip(coefs, coefs[1:]))  # x1.5 a step, from below any effect
    incoherent = [r.coef for r in search.results[1:] if r.coherence < 99]
    assert incoherent == [coefs[-1]] and search.stop.startswith(f"cliff at {coefs[-1]:.4g}")  # stops at the first
    assert values["cliff"].value == coefs[-1]
    assert len(search.baseline.texts) == 3 and len(outcome.baseline.texts) == 2  # searched on 3, scored on the other 2
    assert outcome.prompts == tuple(contrast.eval_prompts("refusal", 5)[3:])
    best = search.best()
    if best is None:
        assert math.isnan(values["effect"].value)
    else:
        scored = outcome.at(best.coef)
        assert values["best"].value == best.coef
        assert values["effect"].value == pytest.approx(scored.trait - outcome.baseline.trait)
    peak = sweep_of(view, "pr").best()
    if peak is not None:  # mean_diff where the probe peaks: a run at the probe's pick, on the same scored prompts
        lm, (prompts, texts), trait = session.lm, _prompts(session.lm, 5), _trait(session.lm)
        at_peak = steer.sweep(
            lm,
            [(vector_of(view, "md").values, c) for c in (0.0, peak.coef)],
            1,
            prompts[3:],
            texts[3:],
            trait,
            4,
            _judging(session),
        )
        assert values["where_pr_peaks"].value == pytest.approx(at_peak[1].trait - at_peak[0].trait)
    labels = set(observation.samples)
    assert labels == {"md search (3 prompts)", "md (2 prompts)", "pr search (3 prompts)", "pr (2 prompts)"} | (
        {"md at pr's best (2 prompts)"} if peak is not None else set()
    )
    flat = observation.values()
    assert flat["texts: md search (3 prompts) | coef 0 | sample 1"] == search.baseline.texts[0]
    assert len(flat["texts: md search (3 prompts) | coef 0 | digest"]) == 16


def test_a_search_without_a_cliff_stops_at_its_limit_and_says_so(session_for, tmp_path):
    _, view, values, _ = _searched(session_for, tmp_path, 0.01, 0.5, 0)  # threshold 0: nothing is incoherent
    outcome = sweep_of(view, "md")
    scale = outcome.calibrated["calibrated_without_massive"]
    coefs = [r.coef for r in outcome.search.results[1:]]
    assert coefs[-1] <= 0.5 * scale < coefs[-1] * 1.5  # up to limit x the calibrated coefficient, no further
    assert "no cliff up to" in outcome.search.stop and math.isnan(values["cliff"].value)


def test_planned_searches_run_in_step_and_each_equals_its_search_alone(session_for, tmp_path, monkeypatch):
    """Searches planned together advance one coefficient a round in shared generation batches: each
    keeps the coefficients, texts and stop of the same search run alone in a fresh session, no
    coefficient past a cliff is generated, and the rounds they share are fewer generation calls."""
    (tmp_path / "s.yaml").write_text(SEARCH.replace("START", "0.01").replace("LIMIT", "8").replace("THRESHOLD", "99"))
    spec = load_file(tmp_path / "s.yaml")[0]
    calls = []
    real_generate = steer.generate
    monkeypatch.setattr(
        steer, "generate", lambda lm, prompts, *a, **k: calls.append(len(prompts)) or real_generate(lm, prompts, *a, **k)
    )
    outcomes = {}
    for together in (True, False):
        calls.clear()
        session = session_for("tiny-llama")
        if together:
            plan(spec, session, spec.data)
        Evaluator(spec, session, spec.data).evaluate()
        view = session.view(spec.data, vectors=spec.vectors, steering=spec.steering)
        outcomes[together] = ({name: sweep_of(view, name).search for name in ("md", "pr")}, len(calls), session)
    (in_step, in_step_calls, session), (alone, alone_calls, _) = outcomes[True], outcomes[False]
    for name in ("md", "pr"):
        assert [r.coef for r in in_step[name].results] == [r.coef for r in alone[name].results]
        assert [r.texts for r in in_step[name].results] == [r.texts for r in alone[name].results]
        assert in_step[name].stop == alone[name].stop and "below any effect" in in_step[name].stop
    searched_runs = [key for key, (tokens, _) in session.memo(("steered runs",), dict).items() if len(tokens) == 3]
    assert len(searched_runs) == sum(len(s.results) - 1 for s in in_step.values())  # none past a cliff
    rounds = [len(s.results) - 1 for s in in_step.values()]  # one coefficient a round (no steps down)
    assert alone_calls - in_step_calls == min(rounds)


def _climbed(search: Search, trait, coherence, scale: float = 96.0) -> tuple[list[float], SweepOutcome]:
    """A search climbed by its rounds on made-up scores: trait(coef) and coherence(coef) of each
    coefficient (coef 0: the unsteered model). Returns the coefficients asked, round by round
    flattened, and the outcome."""
    definition = SimpleNamespace(search=search, threshold=70.0)
    climb = _Climb(SimpleNamespace(definition=definition, calibrated={"calibrated_without_massive": scale}))
    asked = []
    while coefs := climb.next():
        asked += coefs
        results = tuple(SimpleNamespace(coef=c, trait=trait(c), coherence=coherence(c)) for c in [0.0, *coefs])
        climb.take(SweepOutcome(results, 70.0, {}))  # type: ignore[arg-type]
    return asked, climb.outcome()


def test_the_default_search_grid_is_an_eighth_of_the_base_coefficient_and_starts_at_its_rung_below_half():
    assert Search().grid(96.0) == (12.0, 3)  # 12 x 1.5^3 = 40.5 <= 48 < 60.75
    assert Search(factor=1.2).grid(96.0) == (12.0, 7)  # 1.2^7 = 3.58 <= 4 < 1.2^8
    assert Search(start=5).grid(96.0) == (5.0, 0)


def test_a_search_steps_down_until_two_rungs_are_quiet_while_it_climbs_to_the_cliff():
    """The trait moves from 15 up and coherence breaks at 130: from rung 3 (40.5) it steps down to
    8 (8 and 12 quiet: below any effect), one rung a round beside each step up to 136.7."""
    rung = lambda k: 12.0 * 1.5**k
    asked, outcome = _climbed(Search(), lambda c: 0.0 if c < 15 else 50.0, lambda c: 100.0 if c < 130 else 10.0)
    assert asked == [rung(3), rung(2), rung(4), rung(1), rung(5), rung(0), rung(6), rung(-1)]
    assert [r.coef for r in outcome.results] == [0.0, *map(rung, range(-1, 7))]
    assert outcome.stop == "cliff at 136.7; from 8, below any effect"
    assert outcome.best().coef == rung(1)  # the first coefficient of the largest effect, below the cliff


def test_a_search_steps_below_a_quiet_rung_while_the_rung_above_it_moves_the_trait():
    """Noise at the bottom of a search: +8, +4, +10, +2 from the start down (12 prompts: half a
    prompt's worth is 4.17). It stops below two quiet rungs, so it finds the +10."""
    effects = {40.5: 8.0, 27.0: 4.0, 18.0: 10.0, 12.0: 2.0, 8.0: 0.0}
    asked, outcome = _climbed(Search(limit=0.5), lambda c: 70.0 + effects.get(c, 0.0), lambda c: 100.0)
    assert asked == [40.5, 27.0, 18.0, 12.0, 8.0]  # no rung above 40.5 is within 0.5 x 96
    assert outcome.best().coef == 18.0 and outcome.stop.endswith("from 8, below any effect")


def test_a_search_without_an_effect_runs_one_rung_below_its_start():
    asked, outcome = _climbed(Search(), lambda c: 0.0, lambda c: 100.0 if c < 90 else 10.0)
    assert asked == [40.5, 27.0, 60.75, 91.125]
    assert outcome.stop == "cliff at 91.12; from 27, below any effect"


def test_a_search_that_starts_past_its_cliff_steps_down_to_a_coherent_coefficient():
    asked, outcome = _climbed(Search(), lambda c: 0.0, lambda c: 100.0 if c < 20 else 10.0)
    assert asked == [40.5, 27.0, 18.0, 12.0]  # no step up past an incoherent coefficient
    assert [r.coef for r in outcome.results] == [0.0, 12.0, 18.0, 27.0]  # up to and including the first incoherent one
    assert outcome.cliff() == 27.0 and outcome.best().coef == 12.0
    assert outcome.stop == "cliff at 27; from 12, below any effect"


def test_a_search_says_so_when_its_last_step_down_still_moves_the_trait_or_is_incoherent():
    _, moving = _climbed(Search(down=2), lambda c: 50.0 if c else 0.0, lambda c: 100.0, scale=8.0)  # no cliff up to 8 x 8
    assert moving.stop.endswith("from 1.5, still moving the trait by more than 4.17 after 2 steps down")
    assert moving.stop.startswith("no cliff up to 57.67 ")  # 1.5^10: the last rung <= 64
    _, incoherent = _climbed(Search(down=1), lambda c: 0.0, lambda c: 10.0)
    assert incoherent.stop == "cliff at 27; from 27, still incoherent after 1 steps down" and incoherent.best() is None
