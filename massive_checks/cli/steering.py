"""The steering commands: vectors (their geometry, norms and calibration) and steer (a sweep of
coefficients, judged)."""

from __future__ import annotations

import json
import math

from massive_checks.engine import models
from massive_checks.engine.session import ModelSession
from massive_checks.language.data import DataConfig
from massive_checks.steering import coherence, scoring


def cmd_vectors(args) -> int:
    from massive_checks.language.definitions import Window
    from massive_checks.measures.steering import vectors_document

    window = Window.parse(args.window).text()
    lm = models.load(args.model, args.device, args.dtype, device_map=args.device_map)
    lm.check_layer(args.layer, f"--layer {args.layer}")
    document = vectors_document(ModelSession(lm), args.pairs, args.layer, window, (args.min_value, args.min_ratio))
    if args.json:
        print(json.dumps(document, indent=1))
        return 0
    print(
        f"{document['model']}  layer {args.layer}, window {window}, {document['counts']['pos']} pos / "
        f"{document['counts']['neg']} neg; massive dims {document['massive_dims'] or 'none'}"
    )
    for pair, value in document["cosine"].items():
        print(f"  cosine {pair:<34} {value:.4f}")
    for name, value in document["energy"].items():
        print(f"  energy of {name} in the massive dims  {value:.4f}")
    norm, calibration = document["norm"], document["calibration"]
    print(
        f"  activation norm {norm['with']:.4g} with the massive dims, {norm['without']:.4g} without "
        f"(share of the squared norm {norm['share']:.4f})"
    )
    print(f"  base coefficient {calibration['with']:.4g} with, {calibration['without']:.4g} without")
    print(
        f"  probe accuracy: train {document['probe_accuracy']['train']:.3f}, held out {document['probe_accuracy']['heldout']:.3f}"
    )
    return 0


def cmd_steer(args) -> int:
    from massive_checks.language import judges
    from massive_checks.language.definitions import Window
    from massive_checks.measures.steering import named_definition, vector_of
    from massive_checks.steering import steer

    lm = models.load(args.model, args.device, args.dtype, device_map=args.device_map)
    lm.check_layer(args.layer, f"--layer {args.layer}")
    definition = named_definition(args.method, args.pairs, args.layer, Window.parse(args.window).text())
    session = ModelSession(lm, judge_model=args.judge_model)
    vector = vector_of(session.view(DataConfig(), vectors={"v": definition}), "v").values
    texts = _prompt_texts(lm, args)
    judge_name = args.judge or judges.DEFAULT_FOR_SET.get(args.pairs)
    if judge_name is None:
        raise ValueError(f"{args.pairs}: no default trait judge; give --judge (vader, refusal, or module:function)")
    judging = steer.Judging(judge_name, judges.trait_judge(judge_name), coherence.fluency_model(session))
    coefs = [0.0] + [c for c in args.coef if c != 0]
    prompts = [lm.tokenizer(t)["input_ids"] for t in texts]
    trait = scoring.encode_trait(lm.tokenizer, _trait_words(args))
    results = steer.run(lm, vector, args.layer, coefs, prompts, texts, trait, args.max_new_tokens, judging, args.positions)
    return _print_steering(args, lm.name, judging, len(texts), results)


def _prompt_texts(lm, args) -> list[str]:
    """The evaluation prompts, in the tokenizer's chat template with --chat."""
    from massive_checks.language import contrast

    texts = contrast.eval_prompts(args.prompts or args.pairs, args.n_prompts)
    if not args.chat:
        return texts
    return [
        lm.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
        for t in texts
    ]


def _trait_words(args) -> dict:
    """trait_logit's continuations: --trait-pos and --trait-neg, else the contrast set's own."""
    from massive_checks.language import contrast

    words = {"pos": args.trait_pos, "neg": args.trait_neg}
    if all(words.values()):
        return words
    if args.pairs not in contrast.TRAITS:
        raise ValueError(f"{args.pairs}: give the trait_logit's continuations with --trait-pos and --trait-neg")
    return contrast.TRAITS[args.pairs]


def _print_steering(args, model: str, judging, prompts: int, results: list) -> int:
    """steer's output: JSON, or a line per coefficient."""
    from massive_checks.language.intervals import Bootstrap
    from massive_checks.measures.sweeps import SweepOutcome

    outcome = SweepOutcome(tuple(results), 70.0, {}, "cli", chance=judging.model.chance)
    document = {
        "model": model,
        "layer": args.layer,
        "method": args.method,
        "judge": judging.trait_name,
        "judge_model": judging.model.name,
        "prompts": prompts,
        "results": [steering_record(r, ci) for r, ci in zip(results, outcome.intervals(Bootstrap()))],
    }
    if args.json:
        print(json.dumps(document, indent=1))
        return 0
    for r, record in zip(results, document["results"]):
        lo, hi = record["trait_ci"] or (math.nan, math.nan)
        print(
            f"coef {r.coef:>10.4g}  trait {r.trait:6.2f} [{lo:6.2f}, {hi:6.2f}]  trait_logit {r.trait_logit:6.2f}  "
            f"coherence {r.coherence:6.1f}  {r.texts[0][:60]!r}"
        )
    return 0


def steering_record(result, intervals: dict) -> dict:
    """One coefficient of `steer --json`: scores, their intervals over prompts, the texts."""

    def number(x: float) -> float | None:  # JSON has no nan: an undefined score (every text empty) is null
        return None if math.isnan(x) else x

    return {
        "coef": result.coef,
        "trait": result.trait,
        "trait_ci": intervals["trait_ci"],
        "trait_logit": result.trait_logit,
        "coherence": number(result.coherence),
        "coherence_ci": intervals["coherence_ci"],
        "texts": list(result.texts),
    }
