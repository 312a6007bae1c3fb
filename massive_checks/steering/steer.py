"""Steering a model with a vector, and its scores on generated text (claims C15, C17, C18).

Steering adds `coef x unit vector` to the residual stream after block `layer` (the block's output
site), at chosen positions of each sequence: `all` real tokens, the `prompt` only, or the
`generated` tokens only (in scoring, the continuation being scored counts as generated). Position
0 is steered only with `first: true`. coef 0 leaves the model's outputs bit-identical.

A sweep generates greedy continuations (32 new tokens by default) on held-out evaluation prompts
(contrast.eval_prompts: other topics and templates than the vectors' training texts) and scores
each continuation, per prompt, so every score has a bootstrap interval over prompts:
  trait        the trait judge on the decoded continuation (judges.py: VADER for sentiment, a
               refusal-phrase detector for refusal, or a user judge), x 100, mean over prompts.
  coherence    fluency under a judge model other than the steered one, times a penalty for
               degenerate repetition (judges.py defines it), 0-100, mean over prompts.
  trait_logit  the fast score: 100 x the mean over prompts of sigmoid(log-odds), log-odds =
               logsumexp_c log P(c | prompt) over the trait continuations (e.g. " I'm sorry")
               - the same over the anti-trait ones, P under the steered model (teacher forcing).
               Circular for vectors built from responses that begin with those words: a check
               of "does the model refuse" reads `trait`. Computed only where it is read (a
               `score: logit` check, `massive-checks steer`): its teacher-forced forwards cost
               about a quarter of a sweep.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from massive_checks.engine import hooks
from massive_checks.engine.hooks import HookContext, HookFn
from massive_checks.engine.models import LoadedModel
from massive_checks.language import judges
from massive_checks.steering import coherence

GENERATION_ROWS = 64  # steered rows per generation batch (on 2 CPU cores, 64 rows cost 0.6-0.7x per row of 32)
JUDGE_ROWS = 32  # continuations per judge-model batch (a 262k vocabulary's logits: ~1 GB per 32 rows)


@dataclass(frozen=True)
class Steering:
    """Where and how much: block `layer`'s output, `coef` a float or one per batch row [B]."""

    layer: int
    coef: float | torch.Tensor
    positions: str = "all"  # all | prompt | generated
    first: bool = False  # steer position 0 too


def steer_edit(steering: Steering, vector: torch.Tensor) -> HookFn:
    """x + coef x vector / ||vector|| at the chosen positions. x: [B, T, D]; vector [D] or one per
    row [B, D]; coef a float or [B]."""
    unit = (vector / vector.norm(dim=-1, keepdim=True)).float()  # [D] or [B, D]
    coef = torch.as_tensor(steering.coef, dtype=torch.float32)
    offset = coef[..., None] * unit  # [D] or [B, D]
    offset = offset[:, None, :] if offset.dim() == 2 else offset  # [B, 1, D] or [D]

    def edit(x: torch.Tensor, context: HookContext) -> torch.Tensor:
        chosen = chosen_positions(context, steering).to(x.device)  # [B, T]
        return x + offset.to(x.device, x.dtype) * chosen[..., None].to(x.dtype)

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
    if steering is None or vector is None:
        return hooks.attach(lm, [])
    pairs = [(hooks.site(steering.layer, "out"), steer_edit(steering, vector))]
    return hooks.attach(lm, pairs)


def encode_trait(tokenizer, words: Mapping[str, Sequence[str]]) -> dict[str, list[list[int]]]:
    """{"pos": [text, ..], "neg": [..]} -> the same with each continuation's token ids (no special tokens)."""
    return {label: [tokenizer(w, add_special_tokens=False)["input_ids"] for w in texts] for label, texts in words.items()}


def _pad_id(lm: LoadedModel) -> int:
    return lm.tokenizer.pad_token_id or 0


def _left_padded(lm: LoadedModel, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows right-aligned in one batch: ids [B, T] (padding: the pad token) and mask [B, T]."""
    pad = _pad_id(lm)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids, mask


@torch.no_grad()
def generate(
    lm: LoadedModel,
    prompts: list[list[int]],
    max_new_tokens: int,
    steering: Steering | None = None,
    vector: torch.Tensor | None = None,
    use_cache: bool = True,
    prefilled: Callable[[Any], None] | None = None,
) -> list[list[int]]:
    """Greedy continuations (token ids, max_new_tokens each, cut after an end-of-sequence token).
    Prompts are left-padded into one batch; positions count real tokens, so a token's position is
    the same with and without the cache, and with and without padding. `prefilled` is called with
    the prompts' forward output (logits, KV cache) before decoding goes on from it."""
    ids, mask = _left_padded(lm, prompts)
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    prompt_length = mask.sum(dim=1)
    positions = hooks.token_positions(mask)
    new: list[torch.Tensor] = []
    past = None
    with steered(lm, steering, vector) as attached:
        for step in range(max_new_tokens):
            if use_cache and past is not None:
                step_ids, step_mask, step_pos = new[-1][:, None], torch.ones_like(new[-1])[:, None], positions[:, -1:]
            else:
                step_ids, step_mask, step_pos = ids, mask, positions
            output = attached.forward(
                lm.model,
                step_ids,
                mask,
                step=step,
                positions=step_pos,
                prompt_length=prompt_length,
                token_mask=step_mask,
                position_ids=step_pos,
                use_cache=use_cache,
                logits_to_keep=1,
                **cache_argument(lm.model, past),
            )
            past = cache_of(output) if use_cache else None
            if step == 0 and prefilled is not None:
                prefilled(output)
            token = output.logits[:, -1].argmax(dim=-1)  # [B]
            new.append(token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(token)[:, None]], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
    tokens = torch.stack(new, dim=1).tolist() if new else [[] for _ in prompts]
    return [_cut_at_eos(row, lm.tokenizer.eos_token_id) for row in tokens]


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


def cache_argument(model, cache) -> dict:
    """The KV cache as the model's forward takes it: `cache=` (transformers >= 5.25, where
    `past_key_values=` is deprecated, to be removed in 5.40) or `past_key_values=` (earlier)."""
    return {_cache_keyword(type(model)): cache}  # type: ignore[arg-type]  # a class is hashable


@functools.cache
def _cache_keyword(model_class: Any) -> str:
    """Read once per model class, not at every generation step."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_of(output):
    """The KV cache a forward returned (`cache`, or `past_key_values` before transformers 5.25)."""
    cache = output.get("cache")
    return cache if cache is not None else output.get("past_key_values")


def _cut_at_eos(row: list[int], eos: int | None) -> list[int]:
    return row[: row.index(eos) + 1] if eos is not None and eos in row else row


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
    ids, mask = _left_padded(lm, prompts)
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
    cont = torch.full((n, width), _pad_id(lm), dtype=torch.long)
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
    logp = torch.log_softmax(output.logits.float(), dim=-1).gather(-1, cont[:, 1:, None]).squeeze(-1)  # [L, C-1]
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


@dataclass(frozen=True)
class Judging:
    """How a sweep's texts are judged: the trait judge (judges.trait_judge) and the judge model."""

    trait_name: str
    trait: judges.TraitJudge
    model: coherence.FluencyModel


@dataclass(frozen=True)
class Texts:
    """The continuations of one run (or of the unsteered model) on a sweep's prompts, judged.
    Every field is per prompt, in prompt order: [P]."""

    tokens: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...]  # decoded continuations, without the prompts
    traits: tuple[float, ...]  # the trait judge's score x 100
    logits: tuple[float, ...] | None  # 100 x sigmoid(trait log-odds at the response start): trait_logit; None: not asked
    losses: tuple[float, ...]  # per-token loss under the judge model (nan: empty continuation)
    distinct: tuple[float, ...]  # coherence.distinct_2: coherence's repetition penalty reads it

    def rows(self, start: int, count: int) -> Texts:
        """The prompts start .. start + count - 1 of every field."""
        cut = slice(start, start + count)
        logits = None if self.logits is None else self.logits[cut]
        return Texts(self.tokens[cut], self.texts[cut], self.traits[cut], logits, self.losses[cut], self.distinct[cut])


@dataclass(frozen=True)
class SteeringResult:
    """One coefficient of a sweep: its scores (means over prompts) and its judged texts."""

    coef: float
    trait: float  # the judged trait score (0-100)
    trait_logit: float  # the log-odds trait score (0-100); nan: the sweep ran without log-odds
    coherence: float  # 0-100 (judges.py), against the unsteered model's texts
    judged: Texts

    @property
    def texts(self) -> tuple[str, ...]:
        return self.judged.texts


def unsteered(
    lm: LoadedModel,
    prompts: list[list[int]],
    prompt_texts: list[str],
    trait: dict[str, list[list[int]]],
    max_new_tokens: int,
    judging: Judging,
    batch_size: int = GENERATION_ROWS,
    logits: bool = True,
) -> Texts:
    """The unsteered model's continuations on a sweep's prompts, judged (coherence's reference);
    with `logits`, their trait log-odds too (else Texts.logits is None)."""
    tokens: list[list[int]] = []
    odds: list[float] = []
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i : i + batch_size]
        if logits:
            batch_tokens, batch_odds = with_trait_log_odds(lm, batch, trait, max_new_tokens)
            odds += batch_odds.tolist()
        else:
            batch_tokens = generate(lm, batch, max_new_tokens)
        tokens += batch_tokens
    return _judged(lm, tokens, odds if logits else None, prompt_texts, judging)


def unsteered_with_logits(
    lm: LoadedModel, texts: Texts, prompts: list[list[int]], trait: dict[str, list[list[int]]], batch_size: int = GENERATION_ROWS
) -> Texts:
    """The unsteered Texts with their trait log-odds added (a baseline judged without them)."""
    if texts.logits is not None:
        return texts
    odds = torch.cat([trait_log_odds(lm, prompts[i : i + batch_size], trait) for i in range(0, len(prompts), batch_size)])
    return dataclasses.replace(texts, logits=_logit_scores(odds.tolist()))


def _judged(
    lm: LoadedModel, tokens: list[list[int]], log_odds: list[float] | None, prompt_texts: list[str], judging: Judging
) -> Texts:
    texts = [lm.tokenizer.decode(list(t), skip_special_tokens=True) for t in tokens]
    traits = 100.0 * judges.judge_texts(judging.trait, texts, judging.trait_name)
    losses = judged_losses(judging.model, prompt_texts, texts)
    return Texts(
        tuple(map(tuple, tokens)),
        tuple(texts),
        tuple(traits.tolist()),
        None if log_odds is None else _logit_scores(log_odds),
        tuple(losses.tolist()),
        tuple(coherence.distinct_2s(texts).tolist()),
    )


def _logit_scores(log_odds: list[float]) -> tuple[float, ...]:
    """trait_logit per prompt: 100 x sigmoid(log-odds)."""
    return tuple((100.0 * torch.sigmoid(torch.tensor(log_odds, dtype=torch.float64))).tolist())


def result_of(coef: float, judged: Texts, baseline: Texts, chance: float) -> SteeringResult:
    """Means over prompts; coherence against the unsteered texts (judges.py)."""
    coherent = coherence.mean_coherence(
        np.array(judged.losses), np.array(judged.distinct), np.array(baseline.losses), np.array(baseline.distinct), chance
    )
    trait_logit = math.nan if judged.logits is None else float(np.mean(judged.logits))
    return SteeringResult(float(coef), float(np.mean(judged.traits)), trait_logit, coherent, judged)


def sweep(
    lm: LoadedModel,
    runs: list[tuple[torch.Tensor, float]],
    layer: int,
    prompts: list[list[int]],
    prompt_texts: list[str],
    trait: dict[str, list[list[int]]],
    max_new_tokens: int,
    judging: Judging,
    positions: str = "all",
    first: bool = False,
    batch_size: int = GENERATION_ROWS,
    baseline: Texts | None = None,
    generated: dict | None = None,
    logits: bool = True,
) -> list[SteeringResult]:
    """Trait, trait_logit and coherence of the model steered by each (vector [D], coef) run, in its
    order. Every steered (run, prompt) row goes into shared batches of `batch_size` rows, each row
    with its own vector and coef: a sweep over methods and coefs costs a few batched passes, not
    one generation per coef. coef 0 is the unsteered model; `baseline` is it, computed once for
    several sweeps on the same prompts. `generated` (a session's dict, filled here) keeps each
    run's tokens and log-odds by what determines them, so a run another sweep already made (two
    cleanings that zero the same dims give the same vector) is not generated again. Without
    `logits` no trait log-odds are computed (their teacher-forced forwards cost about a quarter of
    a sweep) and trait_logit is nan; a later sweep that asks for them computes only those."""
    baseline = baseline or unsteered(lm, prompts, prompt_texts, trait, max_new_tokens, judging, batch_size, logits)
    if logits:
        baseline = unsteered_with_logits(lm, baseline, prompts, trait, batch_size)
    generated = {} if generated is None else generated
    setting = (layer, positions, first, max_new_tokens, _digest(prompts), _digest(trait))
    keys = [(setting, _digest(vector.float().cpu().numpy().tobytes()), float(coef)) for vector, coef in runs]
    fresh = _distinct_runs(keys, runs, lambda key: key not in generated)
    for chunk, chunk_prompts, steering, vectors in _row_batches(runs, fresh, prompts, layer, positions, first, batch_size):
        if logits:
            chunk_tokens, chunk_odds = with_trait_log_odds(lm, chunk_prompts, trait, max_new_tokens, steering, vectors)
        else:
            chunk_tokens, chunk_odds = generate(lm, chunk_prompts, max_new_tokens, steering, vectors), None
        for n, (i, j) in enumerate(chunk):
            generated.setdefault(keys[i], ([None] * len(prompts), [None] * len(prompts)))
            generated[keys[i]][0][j] = chunk_tokens[n]
            generated[keys[i]][1][j] = None if chunk_odds is None else float(chunk_odds[n])
    if logits:  # runs generated without log-odds (by a sweep that did not ask): only those now
        lacking = _distinct_runs(keys, runs, lambda key: None in generated[key][1])
        for chunk, chunk_prompts, steering, vectors in _row_batches(runs, lacking, prompts, layer, positions, first, batch_size):
            for (i, j), odds in zip(chunk, trait_log_odds(lm, chunk_prompts, trait, steering, vectors).tolist()):
                generated[keys[i]][1][j] = odds
    steered_runs = [i for i, (_, coef) in enumerate(runs) if coef != 0]
    rows = [(i, j) for i in steered_runs for j in range(len(prompts))]  # every steered run's rows, in run order
    tokens = [generated[keys[i]][0][j] for i, j in rows]
    log_odds = [generated[keys[i]][1][j] for i, j in rows] if logits else None
    judged_rows = _judged(lm, tokens, log_odds, [prompt_texts[j] for _, j in rows], judging) if rows else None
    results, chance = [], judging.model.chance
    for i, (_, coef) in enumerate(runs):
        if coef == 0:
            results.append(result_of(0.0, baseline, baseline, chance))
            continue
        start = steered_runs.index(i) * len(prompts)  # this run's rows, in prompt order
        assert judged_rows is not None  # a steered run has rows
        results.append(result_of(coef, judged_rows.rows(start, len(prompts)), baseline, chance))
    return results


def _distinct_runs(keys: list, runs: list, wanted: Callable[[Any], bool]) -> list[int]:
    """The first index of each steered run (coef != 0) whose key `wanted` picks, in run order: a run
    a sweep lists twice is generated once."""
    first = {key: i for i, key in reversed(list(enumerate(keys))) if runs[i][1] != 0 and wanted(key)}
    return sorted(first.values())


def _row_batches(
    runs, run_indices: list[int], prompts: list[list[int]], layer: int, positions: str, first: bool, batch_size: int
):
    """Every (run, prompt) row of the given runs, in batches of `batch_size`: (rows [(i, j)], their
    prompts, a per-row Steering (coef [B]), their vectors [B, D])."""
    rows = [(i, j) for i in run_indices for j in range(len(prompts))]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        steering = Steering(layer, torch.tensor([runs[i][1] for i, _ in chunk]), positions, first)
        vectors = torch.stack([runs[i][0].float().cpu() for i, _ in chunk])  # [B, D]
        yield chunk, [prompts[j] for _, j in chunk], steering, vectors


def _digest(value) -> str:
    """A short fingerprint of bytes, or of a value's repr (token ids: lists and dicts of ints)."""
    return hashlib.sha256(value if isinstance(value, bytes) else repr(value).encode()).hexdigest()[:32]


def run(
    lm: LoadedModel,
    vector: torch.Tensor,
    layer: int,
    coefs: list[float],
    prompts: list[list[int]],
    prompt_texts: list[str],
    trait: dict[str, list[list[int]]],
    max_new_tokens: int,
    judging: Judging,
    positions: str = "all",
    first: bool = False,
) -> list[SteeringResult]:
    """Every score of the model steered at each coefficient (coef 0 is the unsteered model)."""
    return sweep(
        lm, [(vector, float(c)) for c in coefs], layer, prompts, prompt_texts, trait, max_new_tokens, judging, positions, first
    )


def _chunked_tensor(fn, a: list, b: list, size: int) -> torch.Tensor:
    return torch.cat([fn(a[start : start + size], b[start : start + size]) for start in range(0, len(a), size)])
