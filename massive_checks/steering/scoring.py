"""Teacher-forced scores: the trait log-odds of the trait continuations under the (steered) model,
and the per-token losses of continuations under a fluency model."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from massive_checks.engine import hooks
from massive_checks.engine.models import LoadedModel
from massive_checks.engine.stats import target_log_probs
from massive_checks.steering import coherence
from massive_checks.steering.edit import Steering, steered
from massive_checks.steering.generation import cache_argument, cache_of, generate, left_padded, pad_id

JUDGE_ROWS = 32  # continuations per fluency-model batch (a 262k vocabulary's logits: ~1 GB per 32 rows)


def encode_trait(tokenizer, words: Mapping[str, Sequence[str]]) -> dict[str, list[list[int]]]:
    """{"pos": [text, ..], "neg": [..]} -> the same with each continuation's token ids (no special tokens)."""
    return {label: [tokenizer(w, add_special_tokens=False)["input_ids"] for w in texts] for label, texts in words.items()}


def with_trait_log_odds(
    lm: LoadedModel,
    prompts: list[list[int]],
    trait: dict[str, list[list[int]]],
    max_new_tokens: int,
    steering: Steering | None = None,
    vector: torch.Tensor | None = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """generate and trait_log_odds of one batch from one prompt forward: generation's first step
    is the forward trait_log_odds starts from, so its logits and a copy of its KV cache are kept
    (the same numbers as running it twice, at two thirds of the prompts' cost)."""
    kept: list[tuple[torch.Tensor, Any]] = []
    keep = lambda output: kept.append((output.logits[:, -1:], copy.deepcopy(cache_of(output))))
    tokens = generate(lm, prompts, max_new_tokens, steering, vector, prefilled=keep)
    return tokens, trait_log_odds(lm, prompts, trait, steering, vector, prefill=kept[0] if kept else None)


@torch.no_grad()
def continuation_logprobs(
    lm: LoadedModel, prompts: list[list[int]], continuations: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] log P(continuation_i | prompt_i) (sum over its tokens) and [N] its token count, under the
    unsteered model. Each distinct prompt runs once; its KV cache is gathered to its rows and the
    continuations are teacher-forced after it (a judge scores many runs' texts on one prompt set)."""
    distinct = list(dict.fromkeys(map(tuple, prompts)))
    row_of = {prompt: i for i, prompt in enumerate(distinct)}
    index = torch.tensor([row_of[tuple(p)] for p in prompts])  # [N]: each row's prompt
    mask, prefill = _prompts_forward(lm, [list(p) for p in distinct])
    logp = _teacher_forced(lm, prefill, index.to(lm.device), mask, continuations)
    return logp.sum(dim=1).cpu(), torch.tensor([len(c) for c in continuations])


def _prompts_forward(
    lm: LoadedModel,
    prompts: list[list[int]],
    steering: Steering | None = None,
    vector: torch.Tensor | None = None,
    prefill: tuple[torch.Tensor, Any] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, Any]]:
    """The prompts' left-padded mask [P, T] and their (steered) forward: the last logits [P, 1, V]
    and the KV cache, what _teacher_forced continues from. A given prefill (generation's own first
    forward) is used as it is."""
    ids, mask = left_padded(lm, prompts)
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    if prefill is not None:
        return mask, prefill
    positions = hooks.token_positions(mask)
    with steered(lm, steering, vector) as attached:
        first = attached.forward(
            lm.model,
            ids,
            mask,
            positions=positions,
            prompt_length=mask.sum(dim=1),
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
    return mask, (first.logits[:, -1:], cache_of(first))


def _teacher_forced(
    lm: LoadedModel,
    prefill: tuple[torch.Tensor, Any],
    index: torch.Tensor,
    prompt_mask: torch.Tensor,
    continuations: list[list[int]],
    steering: Steering | None = None,
    vector: torch.Tensor | None = None,
) -> torch.Tensor:
    """[N, C] log P of each continuation's tokens (0 after its end), row i continuing prompt
    index[i]: prefill is the prompts' forward, (last logits [U, 1, V], its KV cache, gathered to
    the rows here), prompt_mask [U, T] their left-padded mask. A continuation's first token is
    read from the prompt's last logits; only its other tokens need a forward, which feeds it every
    token but its last (whose logits nothing reads), right-padded after the prompt. A per-row
    steering (coef [N], vector [N, D]) steers each row with its own."""
    last_logits, past = prefill
    cont, cont_mask = _right_padded(lm, continuations)  # [N, C]
    first = torch.log_softmax(last_logits[:, -1].float(), dim=-1)[index, cont[:, 0]]  # [N]
    longer = torch.nonzero(cont_mask[:, 1:].any(dim=1)).flatten()  # [L]: rows of 2 tokens or more
    rest = torch.zeros((len(continuations), cont.shape[1] - 1), device=cont.device)  # [N, C-1]
    if len(longer):
        rest[longer] = _continued(
            lm, past, index[longer], prompt_mask, cont[longer], cont_mask[longer], *_rows_of(steering, vector, longer)
        )
    return torch.where(cont_mask.bool(), torch.cat([first[:, None], rest], dim=1), 0.0)


def _right_padded(lm: LoadedModel, continuations: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuations left-aligned in one batch: ids [N, C] (padding: the pad token) and mask [N, C]."""
    n, width = len(continuations), max(len(c) for c in continuations)
    cont = torch.full((n, width), pad_id(lm), dtype=torch.long)
    cont_mask = torch.zeros((n, width), dtype=torch.long)
    for i, c in enumerate(continuations):
        cont[i, : len(c)], cont_mask[i, : len(c)] = torch.tensor(c, dtype=torch.long), 1
    return cont.to(lm.device), cont_mask.to(lm.device)


def _rows_of(
    steering: Steering | None, vector: torch.Tensor | None, rows: torch.Tensor
) -> tuple[Steering | None, torch.Tensor | None]:
    """A per-row steering (coef [N], vector [N, D]) cut to `rows`; one for all rows as it is."""
    if steering is None or vector is None:
        return steering, vector
    coef = torch.as_tensor(steering.coef)
    if coef.dim() == 1:
        steering = Steering(steering.layer, coef[rows.cpu()], steering.positions, steering.first)
    return steering, vector[rows.cpu()] if vector.dim() == 2 else vector


def _continued(
    lm: LoadedModel,
    past: Any,
    index: torch.Tensor,
    prompt_mask: torch.Tensor,
    cont: torch.Tensor,
    cont_mask: torch.Tensor,
    steering: Steering | None,
    vector: torch.Tensor | None,
) -> torch.Tensor:
    """[L, C-1] log P of tokens 1.. of each continuation cont [L, C] (0 after its end), teacher-forced
    from the prompts' KV cache gathered to the rows (row i continues prompt index[i])."""
    past.batch_select_indices(index)
    fed, fed_mask = cont[:, :-1], cont_mask[:, 1:]  # every token but the last: what predicts tokens 1..
    rows_length = prompt_mask.sum(dim=1)[index]
    positions = rows_length[:, None] + torch.arange(fed.shape[1], device=lm.device)[None, :]  # [L, C-1]
    with steered(lm, steering, vector) as attached:
        output = attached.forward(
            lm.model,
            fed,
            torch.cat([prompt_mask[index], fed_mask], dim=1),
            positions=positions,
            prompt_length=rows_length,
            token_mask=fed_mask,
            position_ids=positions,
            use_cache=True,
            **cache_argument(lm.model, past),
        )
    # log_softmax at the fed tokens only, in place: no [L, C-1, V] copy (Gemma 3's 262k vocabulary)
    logp = target_log_probs(output.logits.float(), cont[:, 1:])  # [L, C-1]
    return torch.where(fed_mask.bool(), logp, 0.0)


@torch.no_grad()
def trait_log_odds(
    lm: LoadedModel,
    prompts: list[list[int]],
    trait: dict[str, list[list[int]]],
    steering: Steering | None = None,
    vector: torch.Tensor | None = None,
    prefill: tuple[torch.Tensor, Any] | None = None,
) -> torch.Tensor:
    """[P] logsumexp log P(pos continuations) - logsumexp log P(neg), per prompt, under the (steered)
    model. Each prompt runs once; its KV cache is repeated for its continuations (right-padded
    after it). A per-row steering (coef [P], vector [P, D]) steers each prompt with its own.
    prefill: the prompts' last logits [P, 1, V] and a KV cache of their own, from the same
    steered forward (generate's first step: with_trait_log_odds); else that forward runs here."""
    continuations = trait["pos"] + trait["neg"]
    n = len(continuations)
    mask, prefill = _prompts_forward(lm, prompts, steering, vector, prefill)
    if steering is not None and vector is not None and torch.as_tensor(steering.coef).dim() == 1:  # one per prompt -> one per row
        steering = Steering(
            steering.layer, torch.as_tensor(steering.coef).repeat_interleave(n), steering.positions, steering.first
        )
        vector = vector.repeat_interleave(n, dim=0) if vector.dim() == 2 else vector
    index = torch.arange(len(prompts), device=lm.device).repeat_interleave(n)  # [P*n]: each prompt's n continuations
    logp = _teacher_forced(lm, prefill, index, mask, continuations * len(prompts), steering, vector)  # [P*n, C]
    per_prompt = logp.sum(dim=1).view(len(prompts), n).cpu()
    n_pos = len(trait["pos"])
    return per_prompt[:, :n_pos].logsumexp(dim=1) - per_prompt[:, n_pos:].logsumexp(dim=1)


def continuation_losses(lm: LoadedModel, prompts: list[list[int]], continuations: list[list[int]]) -> torch.Tensor:
    """[N] per-token loss of each continuation given its prompt under `lm` (nan for an empty one)."""
    logp, counts = continuation_logprobs(lm, prompts, [c or [0] for c in continuations])
    return torch.where(torch.tensor([bool(c) for c in continuations]), -logp / counts, math.nan)


def judge_losses(judge: LoadedModel, prompts: list[str], texts: list[str], batch_size: int = JUDGE_ROWS) -> np.ndarray:
    """[N] per-token loss of each decoded continuation under the judge model, given its prompt,
    both tokenized by the judge's own tokenizer (nan for an empty continuation)."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])  # a prompt's rows in few batches: its forward shared
    prompt_ids = [judge.tokenizer(prompts[i])["input_ids"] for i in order]
    text_ids = [judge.tokenizer(texts[i], add_special_tokens=False)["input_ids"] if texts[i] else [] for i in order]
    losses = _chunked_tensor(lambda ps, cs: continuation_losses(judge, ps, cs), prompt_ids, text_ids, batch_size)
    restored = torch.empty_like(losses)
    restored[torch.tensor(order, dtype=torch.long)] = losses
    return restored.double().numpy()


def judged_losses(judge: coherence.FluencyModel, prompts: list[str], texts: list[str]) -> np.ndarray:
    """judge_losses through the judge's memo: each distinct (prompt, continuation) is judged once
    a session (in batches of the distinct ones), so a text two runs share costs one judge row."""
    rows = list(zip(prompts, texts))
    missing = list(dict.fromkeys(row for row in rows if row not in judge.losses))
    if missing:
        values = judge_losses(judge.lm, [p for p, _ in missing], [t for _, t in missing])
        judge.losses.update(zip(missing, values.tolist()))
    return np.array([judge.losses[row] for row in rows], dtype=np.float64)


def _chunked_tensor(fn, a: list, b: list, size: int) -> torch.Tensor:
    return torch.cat([fn(a[start : start + size], b[start : start + size]) for start in range(0, len(a), size)])
