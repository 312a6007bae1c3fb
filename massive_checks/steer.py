"""Steering a model with a vector, and the two scores of a steered model (claims C15, C17, C18).

Steering adds `coef x unit vector` to the residual stream after block `layer` (the block's output
site), at chosen positions of each sequence: `all` real tokens, the `prompt` only, or the
`generated` tokens only (in scoring, the continuation being scored counts as generated). Position
0 is steered only with `first: true`. coef 0 leaves the model's outputs bit-identical.

Scores, on held-out prompts (deterministic: greedy decoding, no judge model):
  trait      100 x the mean over prompts of sigmoid(log-odds), where log-odds =
             logsumexp_c log P(c | prompt) over the trait continuations (e.g. " I'm sorry")
             - the same over the anti-trait ones (e.g. " Sure"), P under the steered model.
             A 0-100 scale; a steering run reports its change from the unsteered model (coef 0).
  coherence  100 x exp(-max(0, L_steered - L_0)): L = mean over prompts of the per-token loss of a
             greedy continuation under the *unsteered* model, for the steered model's continuation
             and for the unsteered model's own (L_0). The unsteered model scores 100; text the
             unsteered model finds 1 nat/token less likely scores 37.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import hooks
from .hooks import HookContext, HookFn
from .models import LoadedModel

POSITIONS = ("all", "prompt", "generated")


@dataclass(frozen=True)
class Steering:
    layer: int
    coef: float
    positions: str = "all"  # all | prompt | generated
    first: bool = False  # steer position 0 too


def steer_edit(steering: Steering, vector: torch.Tensor) -> HookFn:
    """x + coef x vector / ||vector|| at the chosen positions. x: [B, T, D]."""
    unit = (vector / vector.norm()).float()

    def edit(x: torch.Tensor, context: HookContext) -> torch.Tensor:
        chosen = chosen_positions(context, steering).to(x.device)  # [B, T]
        return x + steering.coef * unit.to(x.device, x.dtype) * chosen[..., None].to(x.dtype)
    return edit


def chosen_positions(context: HookContext, steering: Steering) -> torch.Tensor:
    """[B, T] bool: the real tokens the steering acts on."""
    positions = context.absolute_positions().to(context.mask.device)
    chosen = context.mask.bool()
    if steering.positions != "all":
        if context.prompt_length is None:
            raise ValueError(f"steering at {steering.positions!r} positions needs each prompt's length")
        in_prompt = positions < context.prompt_length.to(positions.device)[:, None]
        chosen = chosen & (in_prompt if steering.positions == "prompt" else ~in_prompt)
    if not steering.first:
        chosen = chosen & (positions > 0)
    return chosen


def steered(lm: LoadedModel, steering: Steering | None, vector: torch.Tensor | None):
    """hooks.attach with the steering edit (nothing attached for None)."""
    pairs = [] if steering is None else [(hooks.site(steering.layer, "out"), steer_edit(steering, vector))]
    return hooks.attach(lm, pairs)


def _left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids, mask


@torch.no_grad()
def generate(lm: LoadedModel, prompts: list[list[int]], max_new_tokens: int, steering: Steering | None = None,
             vector: torch.Tensor | None = None, use_cache: bool = True) -> list[list[int]]:
    """Greedy continuations (token ids, max_new_tokens each, cut after an end-of-sequence token).
    Prompts are left-padded into one batch; positions count real tokens, so a token's position is
    the same with and without the cache, and with and without padding."""
    pad = lm.tokenizer.pad_token_id or 0
    ids, mask = _left_padded(prompts, pad)
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    prompt_length = mask.sum(dim=1)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    new: list[torch.Tensor] = []
    past = None
    with steered(lm, steering, vector) as attached:
        for step in range(max_new_tokens):
            if use_cache and past is not None:
                step_ids, step_mask, step_pos = new[-1][:, None], torch.ones_like(new[-1])[:, None], positions[:, -1:]
            else:
                step_ids, step_mask, step_pos = ids, mask, positions
            output = attached.forward(lm.model, step_ids, mask, step=step, positions=step_pos, prompt_length=prompt_length,
                                      token_mask=step_mask, position_ids=step_pos, use_cache=use_cache,
                                      past_key_values=past, logits_to_keep=1)
            past = output.past_key_values if use_cache else None
            token = output.logits[:, -1].argmax(dim=-1)  # [B]
            new.append(token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(token)[:, None]], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
    tokens = torch.stack(new, dim=1).tolist() if new else [[] for _ in prompts]
    return [_cut_at_eos(row, lm.tokenizer.eos_token_id) for row in tokens]


def _cut_at_eos(row: list[int], eos: int | None) -> list[int]:
    return row[: row.index(eos) + 1] if eos is not None and eos in row else row


@torch.no_grad()
def continuation_logprobs(lm: LoadedModel, prompts: list[list[int]], continuations: list[list[int]],
                          steering: Steering | None = None, vector: torch.Tensor | None = None) -> torch.Tensor:
    """[N] log P(continuation_i | prompt_i) (sum over its tokens) and [N] its token count, under the
    (steered) model; right-padded, one batch."""
    rows = [p + c for p, c in zip(prompts, continuations)]
    width = max(len(r) for r in rows)
    pad = lm.tokenizer.pad_token_id or 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    prompt_length = torch.tensor([len(p) for p in prompts])
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    with steered(lm, steering, vector) as attached:
        logits = attached.forward(lm.model, ids, mask, prompt_length=prompt_length.to(lm.device)).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1).cpu()  # [N, T-1]
    target = torch.arange(1, width)[None, :]
    scored = (target >= prompt_length[:, None]) & mask[:, 1:].bool().cpu()  # continuation tokens only
    return (logp * scored).sum(dim=1), scored.sum(dim=1)


def trait_score(lm: LoadedModel, prompts: list[list[int]], trait: dict[str, list[list[int]]],
                steering: Steering | None = None, vector: torch.Tensor | None = None) -> float:
    """100 x mean over prompts of sigmoid(logsumexp log P(pos continuations) - logsumexp log P(neg))."""
    pairs = [(p, c, label) for p in prompts for label in ("pos", "neg") for c in trait[label]]
    logp, _ = continuation_logprobs(lm, [p for p, _, _ in pairs], [c for _, c, _ in pairs], steering, vector)
    per_prompt = logp.view(len(prompts), -1)  # [P, n_pos + n_neg]
    n_pos = len(trait["pos"])
    log_odds = per_prompt[:, :n_pos].logsumexp(dim=1) - per_prompt[:, n_pos:].logsumexp(dim=1)
    return float(100 * torch.sigmoid(log_odds.double()).mean())


def continuation_loss(lm: LoadedModel, prompts: list[list[int]], continuations: list[list[int]]) -> float:
    """Mean over prompts of the per-token loss of each continuation under the unsteered model."""
    kept = [(p, c) for p, c in zip(prompts, continuations) if c]
    logp, counts = continuation_logprobs(lm, [p for p, _ in kept], [c for _, c in kept])
    return float((-logp / counts.clamp(min=1)).mean())


def coherence(loss_steered: float, loss_unsteered: float) -> float:
    """100 x exp(-max(0, L_steered - L_0)): 100 for the unsteered model, toward 0 for gibberish."""
    return 100.0 * math.exp(-max(0.0, loss_steered - loss_unsteered))


@dataclass(frozen=True)
class SteeringResult:
    coef: float
    trait: float  # trait score (0-100) of the steered model
    coherence: float  # 0-100
    texts: tuple[str, ...]  # decoded continuations, one per prompt


def run(lm: LoadedModel, vector: torch.Tensor, layer: int, coefs: list[float], prompts: list[list[int]],
        trait: dict[str, list[list[int]]], max_new_tokens: int, positions: str = "all", first: bool = False) -> list[SteeringResult]:
    """Trait and coherence of the model steered at each coefficient (coef 0 is the unsteered model)."""
    baseline = generate(lm, prompts, max_new_tokens)
    loss_0 = continuation_loss(lm, prompts, baseline)
    results = []
    for coef in coefs:
        steering = Steering(layer, float(coef), positions, first)
        tokens = baseline if coef == 0 else generate(lm, prompts, max_new_tokens, steering, vector)
        score = trait_score(lm, prompts, trait, steering, vector)
        loss = loss_0 if coef == 0 else continuation_loss(lm, prompts, tokens)
        texts = tuple(lm.tokenizer.decode(t, skip_special_tokens=True) for t in tokens)
        results.append(SteeringResult(float(coef), score, coherence(loss, loss_0), texts))
    return results
