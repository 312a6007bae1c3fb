"""The project's trait judge, named as a spec names it (`judge: user_extensions:exclamations`)."""

from massive_checks.api import judge_texts, trait_judge


def test_the_judge_scores_exclamations_and_empty_text_as_zero():
    judge = trait_judge("user_extensions:exclamations")
    scores = judge_texts(judge, ["Great! Really great!", "Fine. Good!", "", "no ending"], "exclamations")
    assert list(scores) == [1.0, 0.5, 0.0, 0.0]
