"""A steering sweep against its floor (issue 26): the sweep (steered generation, the trait judge,
the judge model's forward) vs the greedy generation of the same rows plus one judge forward over
them, as the spec suite runs it (no trait log-odds: no committed spec reads trait_logit) and as
`massive-checks steer` runs it (with them). The default model is SmolLM2-135M (judged by Gemma 3
270M): 20 evaluation prompts x (the unsteered model + 3 coefficients), 16 new tokens, float32, CPU."""

from __future__ import annotations

import time

import torch
from ratios import record

from massive_checks.engine.session import ModelSession
from massive_checks.language import contrast, judges
from massive_checks.steering import coherence, edit, generation, scoring, steer

PROMPTS, TOKENS, COEFS = 20, 16, (10.0, 30.0, 90.0)


def test_steering_sweep_vs_its_floor(benchmark, lm):
    session = ModelSession(lm)
    texts = contrast.eval_prompts("refusal", PROMPTS)
    prompts = [lm.tokenizer(t)["input_ids"] for t in texts]
    trait = scoring.encode_trait(lm.tokenizer, contrast.TRAITS["refusal"])
    judging = steer.Judging("refusal", judges.refusal, coherence.fluency_model(session))
    vector = torch.randn(lm.width, generator=torch.Generator().manual_seed(0))
    runs = [(vector, 0.0)] + [(vector, c) for c in COEFS]
    steer.sweep(lm, runs[:2], 1, prompts[:2], texts[:2], trait, 2, judging)  # warm-up

    sweep_time = {}
    for logits in (False, True):
        session = ModelSession(lm)  # the judge's memo starts empty each time
        judging = steer.Judging("refusal", judges.refusal, coherence.fluency_model(session))
        start = time.perf_counter()
        results = steer.sweep(lm, runs, lm.n_layers // 2, prompts, texts, trait, TOKENS, judging, logits=logits)
        sweep_time[logits] = time.perf_counter() - start

    start = time.perf_counter()
    rows = [(c, p) for c in COEFS for p in range(PROMPTS)]
    generated = []
    for first in range(0, len(rows), steer.GENERATION_ROWS):  # the steered rows, and the unsteered ones
        chunk = rows[first : first + steer.GENERATION_ROWS]
        steering = edit.Steering(lm.n_layers // 2, torch.tensor([c for c, _ in chunk]))
        generated += generation.generate(lm, [prompts[p] for _, p in chunk], TOKENS, steering, vector)
    generated += generation.generate(lm, prompts, TOKENS)
    decoded = [lm.tokenizer.decode(t, skip_special_tokens=True) for t in generated]
    scoring.judge_losses(judging.model.lm, [texts[p] for _, p in rows] + texts, decoded)
    floor = time.perf_counter() - start

    assert len(results) == len(runs) and all(len(r.texts) == PROMPTS for r in results)
    setting = f"{len(runs)} runs x {PROMPTS} prompts, {TOKENS} tokens, judge {judging.model.name}"
    record(
        f"steering sweep vs its floor: greedy generation of its rows + one judge forward ({setting}; "
        f"{sweep_time[False]:.1f} s vs {floor:.1f} s; the rest is the trait judge)",
        sweep_time[False] / floor,
    )
    record(
        f"  with trait_logit (massive-checks steer; {sweep_time[True]:.1f} s: the rest is also trait_logit's pass)",
        sweep_time[True] / floor,
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
