"""Steering a model with a vector, and its scores on generated text (claims C15, C17, C18).

Steering adds `coef x unit vector` to the residual stream after block `layer` (the block's output
site), at chosen positions of each sequence: `all` real tokens, the `prompt` only, or the
`generated` tokens only (in scoring, the continuation being scored counts as generated). Position
0 is steered only with `first: true`. coef 0 leaves the model's outputs bit-identical.

A sweep generates greedy continuations (32 new tokens by default) on held-out evaluation prompts
(contrast.eval_prompts: other topics and templates than the vectors' training texts) and scores
each continuation, per prompt, so every score has a bootstrap interval over prompts:
  trait        the trait judge on the decoded continuation (language/judges.py: VADER for sentiment, a
               refusal-phrase detector for refusal, or a user judge), x 100, mean over prompts.
  coherence    fluency under a judge model other than the steered one, times a penalty for
               degenerate repetition (coherence.py defines it), 0-100, mean over prompts.
  trait_logit  the fast score: 100 x the mean over prompts of sigmoid(log-odds), log-odds =
               logsumexp_c log P(c | prompt) over the trait continuations (e.g. " I'm sorry")
               - the same over the anti-trait ones, P under the steered model (teacher forcing).
               Circular for vectors built from responses that begin with those words: a check
               of "does the model refuse" reads `trait`. Computed only where it is read (a
               `score: logit` check, `massive-checks steer`): its teacher-forced forwards cost
               about a quarter of a sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from massive_checks.engine.models import LoadedModel
from massive_checks.language import judges
from massive_checks.steering import coherence
from massive_checks.steering.edit import Steering
from massive_checks.steering.generation import generate
from massive_checks.steering.scoring import judged_losses, trait_log_odds, with_trait_log_odds

GENERATION_ROWS = 256  # rows per generation batch: the vocabulary head is most of a decoding step and runs
# at ~2x the FLOP rate on 256 rows as on 64 (2 CPU cores: SmolLM2 102 -> 82 ms a row, Gemma 3 185 -> 166)
LOG_ODDS_ROWS = 64  # at most, per batch that also scores the trait words: each row teacher-forces all of them


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
    distinct: tuple[float, ...]  # coherence.distinct_2 in the judge's tokens (0: says nothing): the repetition penalty

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
    coherence: float  # 0-100 (coherence.py), against the unsteered model's texts
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
    batch_size = _rows(batch_size, logits)
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
    batch_size = _rows(batch_size, True)
    odds = torch.cat([trait_log_odds(lm, prompts[i : i + batch_size], trait) for i in range(0, len(prompts), batch_size)])
    return dataclasses.replace(texts, logits=_logit_scores(odds.tolist()))


def _judged(
    lm: LoadedModel, tokens: list[list[int]], log_odds: list[float] | None, prompt_texts: list[str], judging: Judging
) -> Texts:
    texts = _decoded(lm, tokens)
    traits = 100.0 * judges.judge_texts(judging.trait, texts, judging.trait_name)
    losses = judged_losses(judging.model, prompt_texts, texts)
    return Texts(
        tuple(map(tuple, tokens)),
        tuple(texts),
        tuple(traits.tolist()),
        None if log_odds is None else _logit_scores(log_odds),
        tuple(losses.tolist()),
        tuple(coherence.variety_inputs(judging.model.lm.tokenizer, texts).tolist()),
    )


def _decoded(lm: LoadedModel, tokens) -> list[str]:
    """Each row of continuation token ids as text (special tokens dropped): what the judges read."""
    return [lm.tokenizer.decode(list(t), skip_special_tokens=True) for t in tokens]


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


@dataclass(frozen=True)
class Request:
    """One sweep's steered runs (vector [D], coef) on its prompts: what `prepare` generates and
    judges, several sweeps' rows in shared batches."""

    runs: list[tuple[torch.Tensor, float]]
    layer: int
    prompts: list[list[int]]
    prompt_texts: list[str]
    trait: dict[str, list[list[int]]]
    max_new_tokens: int
    judging: Judging
    positions: str = "all"
    first: bool = False

    def keys(self) -> list[tuple]:
        """Each run's key in `generated`: what determines its tokens and log-odds."""
        setting = (self.layer, self.positions, self.first, self.max_new_tokens, _digest(self.prompts), _digest(self.trait))
        return [(setting, _digest(vector.float().cpu().numpy().tobytes()), float(coef)) for vector, coef in self.runs]

    def batching(self, logits: bool) -> tuple:
        """What rows of one generation batch share: the steered block, positions and length (and,
        with log-odds, the trait words)."""
        return (self.layer, self.positions, self.first, self.max_new_tokens, _digest(self.trait) if logits else None)


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
    order. Every steered (run, prompt) row goes into shared batches of `batch_size` rows (at most
    LOG_ODDS_ROWS with `logits`), each row with its own vector and coef: a sweep over methods and
    coefs costs a few batched passes, not one generation per coef. coef 0 is the unsteered model;
    `baseline` is it, computed once for several sweeps on the same prompts. `generated` (a session's
    dict, filled here) keeps each run's tokens and log-odds by what determines them, so a run
    another sweep already made (two cleanings that zero the same dims give the same vector, or
    `prepare` for several sweeps at once) is not generated again. Without `logits` no trait log-odds
    are computed (their teacher-forced forwards cost about a quarter of a sweep) and trait_logit is
    nan; a later sweep that asks for them computes only those."""
    baseline = baseline or unsteered(lm, prompts, prompt_texts, trait, max_new_tokens, judging, batch_size, logits)
    if logits:
        baseline = unsteered_with_logits(lm, baseline, prompts, trait, batch_size)
    generated = {} if generated is None else generated
    request = Request(runs, layer, prompts, prompt_texts, trait, max_new_tokens, judging, positions, first)
    prepare(lm, [request], generated, batch_size, logits)
    made = [generated.get(key) for key in request.keys()]  # None for coef 0: the unsteered baseline
    return _results(lm, runs, made, prompt_texts, baseline, judging, logits)


def prepare(
    lm: LoadedModel, requests: list[Request], generated: dict, batch_size: int = GENERATION_ROWS, logits: bool = False
) -> None:
    """Generate every steered run of the requests that `generated` lacks (with their trait log-odds
    when asked), the rows of all requests that share a batching in shared batches, and judge all
    their texts' fluency at once per judge model (its memo keeps them): several sweeps advanced
    together (a search's next coefficients for each configuration) cost full batches."""
    todo: dict[tuple, tuple[Request, int]] = {}  # run key -> (request, run index): a run listed twice is made once
    for request in requests:
        for i, key in enumerate(request.keys()):
            if request.runs[i][1] != 0:
                todo.setdefault(key, (request, i))
    _generate_runs(lm, [(k, *todo[k]) for k in todo if k not in generated], generated, batch_size, logits)
    if logits:  # runs generated without log-odds (by a sweep that did not ask): only those now
        _add_log_odds(lm, [(k, *todo[k]) for k in todo if None in generated[k][1]], generated, batch_size)
    _judge_fluency(lm, [(generated[k], *todo[k]) for k in todo])


def _generate_runs(lm, runs: list[tuple], generated: dict, batch_size: int, logits: bool) -> None:
    """Generate the rows of runs [(key, request, run index)] (with their trait log-odds when asked)
    into `generated`: {run key: ([tokens per prompt], [log-odds per prompt])}."""
    for chunk, chunk_prompts, steering, vectors in _row_batches(runs, batch_size, logits):
        shared = chunk[0][1]  # the rows' length (and trait words, with log-odds) are one batching's
        if logits:
            chunk_tokens, chunk_odds = with_trait_log_odds(
                lm, chunk_prompts, shared.trait, shared.max_new_tokens, steering, vectors
            )
        else:
            chunk_tokens, chunk_odds = generate(lm, chunk_prompts, shared.max_new_tokens, steering, vectors), None
        for n, (key, request, _, j) in enumerate(chunk):
            n_prompts = len(request.prompts)
            generated.setdefault(key, ([None] * n_prompts, [None] * n_prompts))
            generated[key][0][j] = chunk_tokens[n]
            generated[key][1][j] = None if chunk_odds is None else float(chunk_odds[n])


def _add_log_odds(lm, runs: list[tuple], generated: dict, batch_size: int) -> None:
    """The trait log-odds of runs [(key, request, run index)] generated without them."""
    for chunk, chunk_prompts, steering, vectors in _row_batches(runs, batch_size, True):
        odds = trait_log_odds(lm, chunk_prompts, chunk[0][1].trait, steering, vectors).tolist()
        for (key, _, _, j), value in zip(chunk, odds):
            generated[key][1][j] = value


def _judge_fluency(lm, runs: list[tuple]) -> None:
    """Every row of runs [((tokens, log-odds), request, run index)] through its request's judge
    model, all rows for one judge model in one call (scoring.judged_losses: batches of distinct
    rows, kept in the judge's memo for _judged to read)."""
    by_model: dict[int, tuple[Any, list[str], list[str]]] = {}
    for (tokens, _), request, _ in runs:
        model = request.judging.model
        _, prompts, texts = by_model.setdefault(id(model), (model, [], []))
        prompts += request.prompt_texts
        texts += _decoded(lm, tokens)
    for model, prompts, texts in by_model.values():
        judged_losses(model, prompts, texts)


def _results(
    lm, runs: list, made: list, prompt_texts: list[str], baseline: Texts, judging: Judging, logits: bool
) -> list[SteeringResult]:
    """Each run's result, in run order, judging every steered run's rows in shared batches; made:
    each run's (tokens, log-odds) per prompt."""
    n_prompts = len(prompt_texts)
    steered_runs = [i for i, (_, coef) in enumerate(runs) if coef != 0]
    rows = [(i, j) for i in steered_runs for j in range(n_prompts)]  # every steered run's rows, in run order
    tokens = [made[i][0][j] for i, j in rows]
    log_odds = [made[i][1][j] for i, j in rows] if logits else None
    judged_rows = _judged(lm, tokens, log_odds, [prompt_texts[j] for _, j in rows], judging) if rows else None
    results, chance = [], judging.model.chance
    for i, (_, coef) in enumerate(runs):
        if coef == 0:
            results.append(result_of(0.0, baseline, baseline, chance))
            continue
        start = steered_runs.index(i) * n_prompts  # this run's rows, in prompt order
        assert judged_rows is not None  # a steered run has rows
        results.append(result_of(coef, judged_rows.rows(start, n_prompts), baseline, chance))
    return results


def _row_batches(runs: list[tuple], batch_size: int, logits: bool):
    """Every (run, prompt) row of runs [(key, request, run index)], grouped by the requests'
    batching, in batches of `batch_size`: (rows [(key, request, run index, prompt index)], their
    prompts, a per-row Steering (coef [B]), their vectors [B, D])."""
    batch_size = _rows(batch_size, logits)
    groups: dict[tuple, list[tuple]] = {}
    for key, request, i in runs:
        rows = groups.setdefault(request.batching(logits), [])
        rows += [(key, request, i, j) for j in range(len(request.prompts))]
    for rows in groups.values():
        shared = rows[0][1]  # its block, positions and first are the group's
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            coefs = torch.tensor([r.runs[i][1] for _, r, i, _ in chunk])
            steering = Steering(shared.layer, coefs, shared.positions, shared.first)
            vectors = torch.stack([r.runs[i][0].float().cpu() for _, r, i, _ in chunk])  # [B, D]
            yield chunk, [r.prompts[j] for _, r, _, j in chunk], steering, vectors


def _rows(batch_size: int, logits: bool) -> int:
    """Rows per batch: `batch_size`, at most LOG_ODDS_ROWS where the batch scores trait log-odds."""
    return min(batch_size, LOG_ODDS_ROWS) if logits else batch_size


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
