"""Coherence (0-100 per continuation, judged by a model other than the steered one, against the
unsteered model's continuation of the same prompt):
  coherence = 100 x fluency x variety, where
  fluency = clip((log V - L) / (log V - R), 0, 1): L is the continuation's per-token loss (nats)
            under the judge model, given its prompt; log V the loss of a uniform guess over the
            judge's vocabulary of V tokens; R = max(L_0, mean L_0), L_0 that loss for the unsteered
            model's continuation of the prompt and mean L_0 its mean over the prompts. Text as
            predictable as the unsteered model's (on this prompt, or on average) scores 1, text no
            better than chance 0, and in between linearly: a fluent refusal the judge finds 0.5
            nat/token less likely than the unsteered answer keeps ~95%.
  variety = min(1, d / min(0.5, d_0)): d is distinct-2, the share of distinct bigrams among the
            continuation's bigrams of the judge's tokens (so a newline loop, a run of one CJK
            character and a one-word repetition are all repetitions, whatever their spaces; 1 for
            a single token), d_0 the unsteered continuation's. Text that says its first half
            twice, or repeats no more than the unsteered model did, keeps 1; "provide provide ..."
            gets ~0.06.
  A continuation with no letter or digit in it (empty: an end-of-sequence token at once; only
  newlines, spaces or punctuation) scores 0: it says nothing, however predictable. A run's
  coherence is the mean over its prompts. The unsteered model scores 100 on every prompt where it
  says something.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DISTINCT_2_KNEE = 0.5  # distinct-2 at and above which variety is 1


def distinct_2(tokens: Sequence[int]) -> float:
    """Distinct token bigrams / token bigrams; 1 for a single token (0 tokens: 0, nothing said)."""
    bigrams = list(zip(tokens, tokens[1:]))
    return len(set(bigrams)) / len(bigrams) if bigrams else float(len(tokens) > 0)


def says_something(text: str) -> bool:
    """Whether a continuation holds a letter or a digit (any script)."""
    return any(ch.isalnum() for ch in text)


def variety_inputs(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """[P] distinct_2 of each text in the judge's tokens; 0 for a text that says nothing."""
    return np.array(
        [distinct_2(tokenizer(t, add_special_tokens=False)["input_ids"]) if says_something(t) else 0.0 for t in texts],
        dtype=np.float64,
    )


def coherence_scores(
    losses: np.ndarray,
    distinct: np.ndarray,
    reference_losses: np.ndarray,
    reference_distinct: np.ndarray,
    mean_reference: np.ndarray | float,
    chance: float,
) -> np.ndarray:
    """100 x fluency x variety per continuation (the module's definition). losses, distinct [..., P]:
    the judged run's (nan loss: empty); reference_losses, reference_distinct [P]: the unsteered
    continuations'; mean_reference: mean L_0, a float or [..., 1] (one per resample), broadcast
    over P; chance: log V of the judge."""
    reference = np.fmax(reference_losses, mean_reference)  # fmax: an empty unsteered continuation uses the mean
    with np.errstate(invalid="ignore", divide="ignore"):
        ramp = np.where(chance > reference, np.clip((chance - losses) / (chance - reference), 0.0, 1.0), 0.0)
    # At or below the reference: 1 (also for a judge whose reference is no better than chance).
    fluency = np.where(losses <= reference, 1.0, np.where(np.isnan(losses), np.nan, ramp))
    with np.errstate(invalid="ignore", divide="ignore"):
        variety = np.minimum(1.0, distinct / np.minimum(DISTINCT_2_KNEE, reference_distinct))
    # Nothing said (distinct 0): 0, whatever its loss; an unsteered reference that said nothing
    # (distinct 0) sets no repetition bar.
    variety = np.where(reference_distinct > 0, variety, np.minimum(1.0, distinct / DISTINCT_2_KNEE))
    return np.where(distinct > 0, 100.0 * fluency * variety, 0.0)


def run_coherence(
    weights: np.ndarray,
    losses: np.ndarray,
    distinct: np.ndarray,
    reference_losses: np.ndarray,
    reference_distinct: np.ndarray,
    chance: float,
) -> np.ndarray:
    """[B, C] each run's coherence under each weighting of the prompts (weights [B, P]: ones for the
    sample itself, bootstrap counts for resamples): mean L_0 and the mean over prompts with text,
    both weighted. losses, distinct [C, P]: the runs'; reference_* [P]: the unsteered run's."""
    mean_reference = _weighted_nanmean(weights, reference_losses)  # [B]
    scores = coherence_scores(
        losses[None], distinct[None], reference_losses, reference_distinct, mean_reference[:, None, None], chance
    )  # [B, C, P]
    present = ~np.isnan(scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("bp,bcp->bc", weights, np.where(present, scores, 0.0)) / np.einsum("bp,bcp->bc", weights, present)


def mean_coherence(
    losses: np.ndarray, distinct: np.ndarray, reference_losses: np.ndarray, reference_distinct: np.ndarray, chance: float
) -> float:
    """A run's coherence: the mean over its prompts with text (nan when none has any)."""
    ones = np.ones((1, len(reference_losses)))
    return float(run_coherence(ones, losses[None], distinct[None], reference_losses, reference_distinct, chance)[0, 0])


def _weighted_nanmean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[B] the weighted mean of values [P] per weighting, over the non-nan ones (nan: none)."""
    present = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(present, values, 0.0)) / (weights @ present)


@dataclass(frozen=True)
class FluencyModel:
    """The model that judges fluency: its loaded model and its name (for reports)."""

    name: str
    lm: Any  # models.LoadedModel (judges.py imports no torch)
    # (prompt, continuation) -> per-token loss, filled by scoring.judged_losses: runs of a session
    # (other coefficients, other cleanings) often generate the same text, judged once
    losses: dict[tuple[str, str], float] = field(default_factory=dict, compare=False, repr=False)

    @property
    def chance(self) -> float:
        """log V: the per-token loss of a uniform guess over the judge's vocabulary."""
        return math.log(self.lm.model.get_output_embeddings().weight.shape[0])


def fluency_model(session: Any, name: str | None = None) -> FluencyModel:
    """The model that judges steered text's fluency (session: engine.session.ModelSession): `name`
    (a spec's judge_model), else the session's default (--judge-model), else another model than
    the session's (models.default_judge). It is the session's own model only when named so."""
    from massive_checks.engine import models

    name = name or session.judge_default or models.default_judge(session.lm.name)
    return session.memo(("judge model", name), lambda: FluencyModel(name, session.load_other(name)))
