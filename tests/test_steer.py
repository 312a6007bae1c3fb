"""Steering (issue 10, first part): the edit, greedy generation with the KV cache, and the two
scores, against plain-transformers computations on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from massive_checks import cli
from massive_checks.engine import hooks
from massive_checks.engine.hooks import HookContext
from massive_checks.steering import edit, generation, scoring
from massive_checks.steering.edit import Steering


@pytest.fixture(scope="module")
def prompts():
    return [[256, 72, 105, 33], [256, 87, 104, 97, 116, 32, 105, 115], [256, 65]]  # byte ids after <s>


def _vector(lm, seed=0):
    return torch.randn(lm.width, generator=torch.Generator().manual_seed(seed))


def _plain_logits(lm, ids, mask=None):
    with torch.no_grad():
        return lm.model(input_ids=ids, attention_mask=mask if mask is not None else torch.ones_like(ids)).logits


def test_chosen_positions_by_hand():
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])  # left padding on row 0
    context = HookContext(mask, prompt_length=torch.tensor([2, 3]))
    positions = context.absolute_positions()
    assert positions.tolist() == [[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]]
    pick = lambda **kw: edit.chosen_positions(context, Steering(0, 1.0, **kw)).int().tolist()
    assert pick(positions="all") == [[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert pick(positions="all", first=True) == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert pick(positions="prompt") == [[0, 0, 1, 0, 0], [0, 1, 1, 0, 0]]
    assert pick(positions="generated") == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-gemma3"])
def test_steering_adds_the_unit_vector_after_the_block_and_nothing_else(load_model, name):
    """Logits with the edit equal logits of a forward where block L's output is changed by hand."""
    lm = load_model(name)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    v = _vector(lm)
    steering = Steering(1, 3.0)
    with edit.steered(lm, steering, v) as attached, torch.no_grad():
        steered = attached.forward(lm.model, ids, torch.ones_like(ids)).logits
    block, _ = hooks.resolve(lm, "blocks.1.out")

    def by_hand(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[:, 1:] += 3.0 * v / v.norm()  # every real token but position 0
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = block.register_forward_hook(by_hand)
    try:
        expected = _plain_logits(lm, ids)
    finally:
        handle.remove()
    assert torch.allclose(steered, expected, atol=1e-5)
    assert not torch.allclose(steered, _plain_logits(lm, ids), atol=1e-3)  # it did something


def test_coefficient_zero_is_bit_identical_in_logits_and_generations(load_model, prompts):
    lm = load_model("tiny-llama")
    ids = torch.tensor([prompts[1]])
    with edit.steered(lm, Steering(1, 0.0), _vector(lm)) as attached, torch.no_grad():
        zero = attached.forward(lm.model, ids, torch.ones_like(ids)).logits
    assert torch.equal(zero, _plain_logits(lm, ids))
    assert generation.generate(lm, prompts, 6, Steering(1, 0.0), _vector(lm)) == generation.generate(lm, prompts, 6)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_generation_with_the_cache_equals_generation_without_it_under_steering(load_model, prompts, name, positions):
    lm = load_model(name)
    steering, v = Steering(1, 40.0, positions), _vector(lm, 1)
    cached = generation.generate(lm, prompts, 8, steering, v, use_cache=True)
    recomputed = generation.generate(lm, prompts, 8, steering, v, use_cache=False)
    assert cached == recomputed
    assert cached != generation.generate(lm, prompts, 8)  # the steering changes what is generated


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-gemma3"])
def test_trait_log_odds_from_the_generations_prompt_forward_equal_their_own(load_model, prompts, name):
    """with_trait_log_odds reuses generation's first forward (logits and a copy of its KV cache)
    for trait_log_odds: the same tokens and the same log-odds, bit for bit, as running both, with
    one steering per row and without steering."""
    lm = load_model(name)
    trait = {"pos": [[104, 105], [120]], "neg": [[121, 122, 123]]}
    per_row = Steering(1, torch.tensor([5.0, 40.0, 0.0]), "all")
    vectors = torch.stack([_vector(lm, seed) for seed in range(3)])
    for steering, vector in ((per_row, vectors), (None, None)):
        tokens, odds = scoring.with_trait_log_odds(lm, prompts, trait, 6, steering, vector)
        assert tokens == generation.generate(lm, prompts, 6, steering, vector)
        assert torch.equal(odds, scoring.trait_log_odds(lm, prompts, trait, steering, vector))
    assert scoring.with_trait_log_odds(lm, prompts, trait, 0)[0] == [[], [], []]  # no step: its own prompt forward


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])
def test_per_row_trait_log_odds_equal_each_prompt_steered_alone(load_model, prompts, name):
    """One-token continuations are read from the prompt's logits and skip the forward, so the rows
    that do run carry a subset of the per-row coefs and vectors: each prompt's log-odds must still
    be those of that prompt steered alone by its own vector and coef."""
    lm = load_model(name)
    trait = {"pos": [[104, 105], [120]], "neg": [[121, 122, 123], [99]]}
    coefs, vectors = [5.0, 40.0, 12.0], torch.stack([_vector(lm, seed) for seed in range(3)])
    together = scoring.trait_log_odds(lm, prompts, trait, Steering(1, torch.tensor(coefs)), vectors)
    alone = [float(scoring.trait_log_odds(lm, [p], trait, Steering(1, c), v)[0]) for p, c, v in zip(prompts, coefs, vectors)]
    assert together.tolist() == pytest.approx(alone, rel=1e-5, abs=1e-5)
    swapped = scoring.trait_log_odds(lm, prompts, trait, Steering(1, torch.tensor(coefs)), vectors.flip(0))
    assert not torch.allclose(swapped, together, atol=1e-3)  # the rows' own vectors matter


def test_generation_equals_one_prompt_at_a_time_greedy_decoding_by_hand(load_model, prompts):
    """Left padding and real-token positions: each batched row equals its own unpadded greedy loop."""
    lm = load_model("tiny-llama")
    steering, v = Steering(2, 25.0, "generated"), _vector(lm, 2)
    batched = generation.generate(lm, prompts, 5, steering, v)
    for prompt, row in zip(prompts, batched):
        ids = torch.tensor([prompt])
        for _ in range(5):
            length = len(prompt)
            block, _ = hooks.resolve(lm, "blocks.2.out")

            def add(_m, _a, output):
                hidden = output[0] if isinstance(output, tuple) else output
                hidden = hidden.clone()
                hidden[:, length:] += 25.0 * v / v.norm()  # generated positions only
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

            handle = block.register_forward_hook(add)
            try:
                token = _plain_logits(lm, ids)[0, -1].argmax()
            finally:
                handle.remove()
            ids = torch.cat([ids, token.view(1, 1)], dim=1)
        assert row == ids[0, len(prompt) :].tolist()


def test_hooks_are_removed_after_steering_also_on_errors(load_model, prompts):
    lm = load_model("tiny-llama")
    generation.generate(lm, prompts, 3, Steering(1, 5.0), _vector(lm))
    assert hooks.hook_count(lm.model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with edit.steered(lm, Steering(1, 5.0), _vector(lm)):
            assert hooks.hook_count(lm.model) == 1
            raise RuntimeError("boom")
    assert hooks.hook_count(lm.model) == 0
    with pytest.raises(ValueError, match="needs each prompt's length"):  # raised inside a hook
        with edit.steered(lm, Steering(1, 5.0, "prompt"), _vector(lm)), torch.no_grad():
            lm.model(input_ids=torch.tensor([[1, 2, 3]]))
    assert hooks.hook_count(lm.model) == 0


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-gemma3"])
def test_trait_and_coherence_scores_equal_a_hand_computation(load_model, prompts, name):
    lm = load_model(name)
    trait = {"pos": [[104, 105], [120]], "neg": [[121, 122, 123]]}
    steering, v = Steering(1, 10.0, "generated"), _vector(lm, 3)

    def logp(prompt, continuation, steered: bool):
        ids = torch.tensor([prompt + continuation])
        handle = None
        if steered:
            block, _ = hooks.resolve(lm, "blocks.1.out")

            def add(_m, _a, output):
                hidden = (output[0] if isinstance(output, tuple) else output).clone()
                hidden[:, len(prompt) :] += 10.0 * v / v.norm()
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

            handle = block.register_forward_hook(add)
        try:
            logits = torch.log_softmax(_plain_logits(lm, ids)[0].double(), dim=-1)
        finally:
            if handle is not None:
                handle.remove()
        return sum(float(logits[len(prompt) + i - 1, t]) for i, t in enumerate(continuation))

    def expected_trait(steered):
        scores = []
        for p in prompts:
            pos = math.log(sum(math.exp(logp(p, c, steered)) for c in trait["pos"]))
            neg = math.log(sum(math.exp(logp(p, c, steered)) for c in trait["neg"]))
            scores.append(1 / (1 + math.exp(-(pos - neg))))
        return 100 * sum(scores) / len(scores)

    def trait_logit(*steered):
        return float(100 * torch.sigmoid(scoring.trait_log_odds(lm, prompts, trait, *steered).double()).mean())

    assert trait_logit(steering, v) == pytest.approx(expected_trait(True), rel=1e-4)
    assert trait_logit() == pytest.approx(expected_trait(False), rel=1e-4)
    continuations = [[65, 66, 67], [68], [69, 70], []]
    losses = scoring.continuation_losses(lm, prompts + [prompts[0]], continuations)
    by_hand = [-logp(p, c, False) / len(c) for p, c in zip(prompts, continuations[:3])]
    assert losses[:3].tolist() == pytest.approx(by_hand, rel=1e-4)
    assert math.isnan(losses[3])  # an empty continuation has no per-token loss


def test_steer_command_prints_the_documented_json(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Review of the lamp:\nReview of the tent:\n")
    argv = [
        "steer",
        "tiny-llama",
        "--pairs",
        "sentiment",
        "--layer",
        "1",
        "--method",
        "mean_diff",
        "--coef",
        "0",
        "--coef",
        "30",
        "--prompts",
        str(prompts),
        "--max-new-tokens",
        "4",
        "--judge-model",
        "tiny-gemma3",
        "--json",
    ]
    assert cli.main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert list(document) == ["model", "layer", "method", "judge", "judge_model", "prompts", "results"]
    assert (document["judge"], document["judge_model"], document["prompts"]) == ("vader", "tiny-gemma3", 2)
    assert [r["coef"] for r in document["results"]] == [0.0, 30.0]
    for result in document["results"]:
        assert list(result) == ["coef", "trait", "trait_ci", "trait_logit", "coherence", "coherence_ci", "texts"]
        assert len(result["texts"]) == 2 and 0 <= result["trait"] <= 100 and 0 <= result["trait_logit"] <= 100
        assert result["coherence"] is None or 0 <= result["coherence"] <= 100
    assert document["results"][0]["coherence"] in (100.0, None)  # None: every text empty (nan)
