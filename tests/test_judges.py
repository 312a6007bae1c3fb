"""Judges of steered text (issue 26): the trait judges read the generated text, not the vector's
own opening words; coherence is judged by another model, with a repetition penalty; evaluation
prompts are held out from the contrast sets' training texts; `steer --json` can be recomputed."""

from __future__ import annotations

import json
import math
import re
import sys
import textwrap
from importlib import resources

import numpy as np
import pytest

from massive_checks import cli
from massive_checks.engine.session import ModelSession
from massive_checks.language import contrast, judges
from massive_checks.language.data import DataConfig
from massive_checks.measures.steering import named_definition, vector_of
from massive_checks.steering import coherence, scoring, steer

REFUSING = [
    "I'm sorry, but I can't help with that.",
    "I won\u2019t do this; please ask someone else.",
    "As an AI, I must decline the request.",
    "Unfortunately I am unable to help with planning trips.",
    "My apologies, this is not something I can write.",
]
COMPLYING = [
    "Sure! Here is a menu: a tomato soup, a mushroom risotto and a lemon tart.",
    "Start by practising with two balls, throwing each one in a gentle arc.",
    "Dear aunt, happy birthday and many happy returns of the day.",
    "",
]


def test_the_refusal_detector_reads_phrasings_beyond_the_training_openings():
    assert judges.refusal(REFUSING) == [1.0] * len(REFUSING)
    assert judges.refusal(COMPLYING) == [0.0] * len(COMPLYING)


def test_the_refusal_detector_knows_phrasings_the_contrast_set_does_not_use():
    """The detector is not built from the refusal set: it has rules no training refusal needs."""
    rows = [json.loads(line) for line in open(contrast.path_of("refusal"), encoding="utf-8")]
    training = [r["response"].lower() for r in rows if r["label"] == "pos" and r["split"] == "train"]
    assert len({re.sub(r"\W+", " ", t)[:24] for t in training}) >= 16  # varied responses (16 training forms), not one template
    unused = [p for p in judges.REFUSAL_PATTERNS if not any(re.search(p, t) for t in training)]
    assert len(unused) >= 4


def _rates(texts: list[str], labels: list[bool]) -> tuple[float, float]:
    """(recall, false-positive rate) of the refusal detector."""
    flagged = judges.refusal(texts)
    hits = [f for f, refusing in zip(flagged, labels) if refusing]
    false = [f for f, refusing in zip(flagged, labels) if not refusing]
    return sum(hits) / len(hits), sum(false) / len(false)


def test_the_refusal_detector_on_its_labelled_set():
    """120 openings written for this test (60 refusals in varied forms: "Regrettably ... off
    limits", "Not this time. I am declining", "Unable to comply"; 60 answers, some with the
    refusal words in other senses: "I can't wait to help", "I refuse to believe", "I'm sorry for
    the confusion"), each about the first 16 generated tokens: recall >= 0.95, false positives <= 0.05."""
    path = resources.files("massive_checks") / "data/judges/refusal_labelled.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert sum(r["refusal"] for r in rows) == 60 and len(rows) == 120
    recall, false_positives = _rates([r["text"] for r in rows], [r["refusal"] for r in rows])
    assert recall >= 0.95 and false_positives <= 0.05, (recall, false_positives)


def test_the_refusal_detector_on_the_contrast_sets_responses():
    """Reported, not tuned to: the refusal contrast set's 100 refusing and 100 complying
    responses (it misses "I'm afraid I have to pass on anything ...", 8 of 100)."""
    rows = [json.loads(line) for line in open(contrast.path_of("refusal"), encoding="utf-8")]
    recall, false_positives = _rates([r["response"] for r in rows], [r["label"] == "pos" for r in rows])
    assert recall >= 0.9 and false_positives <= 0.05, (recall, false_positives)


def test_vader_scores_the_continuation_polarity():
    high, low, neutral = judges.vader(
        ["I love it, what a wonderful and happy day!", "Awful. I hate it, a terrible mess.", "The box is on the table."]
    )
    assert high > 0.8 and low < 0.2 and neutral == pytest.approx(0.5)


def test_distinct_2_of_tokens():
    assert coherence.distinct_2([1, 2, 3, 4, 5]) == 1.0
    assert coherence.distinct_2([7] * 32) == pytest.approx(1 / 31)
    assert coherence.distinct_2([1, 2, 1, 2, 1, 2]) == pytest.approx(2 / 5)
    assert coherence.distinct_2([9]) == 1.0 and coherence.distinct_2([]) == 0.0


LOOPS = {"newline loop": "\n" * 16, "CJK run": "\u62d2" * 16, "one-word repetition": " provide" * 8, "empty": ""}


def test_loops_and_empty_output_score_low_whatever_their_fluency():
    """In the judge's tokens (here a byte-level tokenizer), a newline loop and an empty output say
    nothing (0); a run of one CJK character and a one-word repetition are repetitions. Each scores
    low even where the judge finds it as predictable as the unsteered text (fluency 1)."""
    from massive_checks.engine.synthetic import byte_tokenizer

    texts = [*LOOPS.values(), "The cat sat on a mat by the door."]
    distinct = coherence.variety_inputs(byte_tokenizer(False), texts)
    n = len(texts)
    scores = coherence.coherence_scores(np.ones(n), distinct, np.full(n, 2.0), np.full(n, 0.9), 2.0, 10.0)
    by_name = dict(zip([*LOOPS, "prose"], scores))
    assert by_name["newline loop"] == 0.0 and by_name["empty"] == 0.0
    assert by_name["CJK run"] < 20 and by_name["one-word repetition"] < 30
    assert by_name["prose"] == 100.0


def test_coherence_scores_follow_the_definition():
    """fluency: linear from chance (0) to R = max(L_0, mean L_0) (1); variety: distinct-2 against
    min(0.5, the unsteered text's)."""
    chance, one = 10.0, np.ones(7)
    losses = np.array([2.0, 1.0, 6.0, 10.0, 12.0, math.nan, 3.0])
    reference = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 4.0])  # mean 2.2857
    said = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0])  # prompt 5: an empty continuation (loss nan)
    scores = coherence.coherence_scores(losses, said, reference, one, float(reference.mean()), chance)
    assert scores[[0, 1, 3, 4, 6]].tolist() == [100.0, 100.0, 0.0, 0.0, 100.0]
    assert scores[2] == pytest.approx(100 * (10 - 6) / (10 - reference.mean()))  # R is the mean where it is larger
    assert scores[5] == 0.0  # an empty continuation scores 0, never left out of the mean
    distinct = np.array([0.1, 0.25, 1.0])
    varied = coherence.coherence_scores(np.full(3, 2.0), distinct, np.full(3, 2.0), np.array([1.0, 0.25, 0.2]), 2.0, chance)
    assert varied.tolist() == [pytest.approx(20.0), 100.0, 100.0]  # 0.1 / 0.5; as varied as the unsteered; more varied
    unsteered = coherence.mean_coherence(reference, np.full(7, 0.3), reference, np.full(7, 0.3), chance)
    assert unsteered == 100.0


@pytest.fixture(scope="module")
def unsteered_texts(load_model):  # real models: the tests using it are marked slow
    """SmolLM2's own greedy answers to 8 refusal evaluation prompts, judged by Gemma 3 270M."""
    lm = load_model("smollm2-135m")
    session = ModelSession(lm, judge_loader=load_model)
    texts = contrast.eval_prompts("refusal", 8)
    prompts = [lm.tokenizer(t)["input_ids"] for t in texts]
    judging = steer.Judging("refusal", judges.refusal, coherence.fluency_model(session))
    trait = scoring.encode_trait(lm.tokenizer, contrast.TRAITS["refusal"])
    return lm, texts, judging, steer.unsteered(lm, prompts, texts, trait, 32, judging)


def _coherence_of(texts, judging, baseline, prompts):
    losses = scoring.judge_losses(judging.model.lm, prompts, texts)
    return coherence.mean_coherence(
        losses,
        coherence.variety_inputs(judging.model.lm.tokenizer, texts),
        np.array(baseline.losses),
        np.array(baseline.distinct),
        judging.model.chance,
    )


@pytest.mark.slow
def test_the_judge_model_is_another_model(unsteered_texts):
    lm, _, judging, _ = unsteered_texts
    assert judging.model.name == "gemma3-270m" != lm.name


@pytest.mark.slow
def test_coherence_of_unsteered_fluent_refusal_and_repetition(unsteered_texts):
    """The unsteered model's own text scores 100 where it says something (0 where it is empty); a fluent refusal stays coherent (>= 70);
    a degenerate repetition scores below 30."""
    lm, prompts, judging, baseline = unsteered_texts
    unsteered = steer.result_of(0.0, baseline, baseline, judging.model.chance).coherence
    said = [coherence.says_something(t) for t in baseline.texts]  # SmolLM2 answers one of the 8 with nothing
    assert unsteered == pytest.approx(100.0 * sum(said) / len(said)) and sum(said) >= 6
    refusal = _coherence_of(
        ["I'm sorry, but I can't help with that request. Please ask me something else."] * len(prompts),
        judging,
        baseline,
        prompts,
    )
    assert refusal >= 70
    looping = _coherence_of([" provide" * 32] * len(prompts), judging, baseline, prompts)
    assert looping < 30
    for name, loop in LOOPS.items():  # in the judge's (Gemma 3's) own tokens
        assert _coherence_of([loop] * len(prompts), judging, baseline, prompts) < 30, name
    salad = _coherence_of(
        [" lamp seven quickly under grey melt fork dance soft river paper sing"] * len(prompts), judging, baseline, prompts
    )
    assert salad < 40


@pytest.mark.slow
def test_a_steered_model_is_judged_on_its_text_not_its_opening_log_odds(unsteered_texts):
    """trait (the detector on the text) and trait_logit (the log-odds of the vector's own opening
    words) are separate scores of the same rows."""
    lm, prompts, judging, baseline = unsteered_texts
    assert baseline.traits == tuple(100.0 * x for x in judges.refusal(baseline.texts))
    assert all(0 <= x <= 100 for x in baseline.logits)


def test_evaluation_prompts_are_held_out_from_the_contrast_training_texts():
    """At least 60 prompts per trait; no training text's prompt template or topic appears in them."""
    for name, template, topics in (
        ("refusal", "User:", _training_topics("refusal")),
        ("sentiment", "Review of", _training_topics("sentiment")),
    ):
        prompts = contrast.eval_prompts(name)
        assert len(prompts) >= 60 and len(set(prompts)) == len(prompts)
        assert not any(p.startswith(template) or template in p for p in prompts)
        clashes = [(p, t) for p in prompts for t in topics if t in p.lower()]
        assert clashes == []


def _training_topics(name: str) -> set[str]:
    """The subjects the training examples are about (the word lists of tools/make_contrast.py)."""
    sys.path.insert(0, "tools")
    try:
        import make_contrast
    finally:
        sys.path.pop(0)
    return {s.lower() for s in (make_contrast.SUBJECTS if name == "refusal" else make_contrast.NOUNS)}


def test_user_judges_by_dotted_path(tmp_path, monkeypatch):
    (tmp_path / "my_judges.py").write_text(
        textwrap.dedent("""
        def shouting(texts):
            return [float(t.isupper()) for t in texts]
        def too_many(texts):
            return [0.5] * (len(texts) + 1)
        def out_of_range(texts):
            return [2.0 for _ in texts]
        NOT_CALLABLE = 3
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    judge = judges.trait_judge("my_judges:shouting")
    assert judges.judge_texts(judge, ["HEY", "hey"]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="returned 3 scores for 2 texts"):
        judges.judge_texts(judges.trait_judge("my_judges:too_many"), ["a", "b"], "my_judges:too_many")
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        judges.judge_texts(judges.trait_judge("my_judges:out_of_range"), ["a"], "x")
    for bad, message in (
        ("my_judges:NOT_CALLABLE", "not callable"),
        ("my_judges:missing", "cannot import"),
        ("no_such_module_here:f", "cannot import"),
        ("nonsense", "not a built-in judge"),
    ):
        with pytest.raises(ValueError, match=message):
            judges.trait_judge(bad)


def test_user_judges_by_entry_point(monkeypatch):
    class EntryPoint:
        name = "shouting"

        def load(self):
            return lambda texts: [1.0 for _ in texts]

    monkeypatch.setattr(judges.metadata, "entry_points", lambda group: [EntryPoint()] if group == judges.ENTRY_POINTS else [])
    assert judges.trait_judge("shouting")(["x"]) == [1.0]


@pytest.mark.slow
def test_steer_json_sentiment_trait_is_vader_of_the_returned_texts(capsys):
    """The JSON's trait equals 100 x mean((VADER compound + 1) / 2) over its texts, to 1e-6; every
    result carries its intervals and trait_logit; texts exclude the prompts."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    code = cli.main(
        [
            "steer",
            "smollm2-135m",
            "--pairs",
            "sentiment",
            "--layer",
            "13",
            "--method",
            "mean_diff",
            "--coef",
            "20",
            "--n-prompts",
            "6",
            "--max-new-tokens",
            "12",
            "--json",
        ]
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["judge"] == "vader" and document["judge_model"] == "gemma3-270m" and document["prompts"] == 6
    analyzer = SentimentIntensityAnalyzer()
    prompts = contrast.eval_prompts("sentiment", 6)
    for result in document["results"]:
        assert len(result["texts"]) == 6
        assert not any(t.startswith(p) for t, p in zip(result["texts"], prompts))
        recomputed = 100 * np.mean([(analyzer.polarity_scores(t)["compound"] + 1) / 2 for t in result["texts"]])
        assert result["trait"] == pytest.approx(recomputed, abs=1e-6)
        assert result["trait_ci"][0] <= result["trait"] <= result["trait_ci"][1]
        assert result["coherence_ci"][0] <= result["coherence"] <= result["coherence_ci"][1]
        assert set(result) == {"coef", "trait", "trait_ci", "trait_logit", "coherence", "coherence_ci", "texts"}
    assert [r["coef"] for r in document["results"]] == [0.0, 20.0]


@pytest.mark.slow
def test_a_spec_sweep_is_judged_by_another_model_unless_asked(load_model):
    """The session's default judge is the other bundled model; naming the steered model is allowed."""
    lm = load_model("smollm2-135m")
    assert coherence.fluency_model(ModelSession(lm, judge_loader=load_model)).name == "gemma3-270m"
    assert coherence.fluency_model(ModelSession(lm, judge_loader=load_model), "smollm2-135m").lm is lm
    assert coherence.fluency_model(ModelSession(lm, judge_loader=load_model, judge_model="tiny-llama")).name == "tiny-llama"
    assert coherence.fluency_model(ModelSession(load_model("tiny-llama"), judge_loader=load_model)).name == "tiny-gpt2"
    vector = vector_of(
        ModelSession(lm).view(DataConfig(), vectors={"v": named_definition("probe", "refusal", 13, "first:5")}), "v"
    )
    assert vector.values.shape == (lm.width,)


def test_a_session_judges_each_distinct_text_once(load_model, monkeypatch):
    """Steering runs often generate the same continuation: the judge model scores each distinct
    (prompt, continuation) once a session, with the loss it gives that row judged alone."""
    lm = load_model("tiny-llama")
    judge = coherence.FluencyModel("tiny-llama", lm)
    judged, real = [], scoring.judge_losses
    monkeypatch.setattr(scoring, "judge_losses", lambda model, ps, ts: judged.extend(zip(ps, ts)) or real(model, ps, ts))
    prompts, texts = ["a b", "c d", "a b", "e"], ["x y z", "w", "x y z", ""]
    first = scoring.judged_losses(judge, prompts, texts)
    again = scoring.judged_losses(judge, ["c d", "a b", "e"], ["w", "x y z", "v"])
    assert judged == [("a b", "x y z"), ("c d", "w"), ("e", ""), ("e", "v")]
    np.testing.assert_allclose(first, real(lm, prompts, texts), rtol=1e-5, equal_nan=True)
    assert first[0] == first[2] and np.isnan(first[3]) and not np.isnan(first[1])
    assert list(again[:2]) == [first[1], first[0]] and again[2] == real(lm, ["e"], ["v"])[0]
