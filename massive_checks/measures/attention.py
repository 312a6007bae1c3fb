"""Attention per block, over all heads: how much attention goes to one key (the sink: position 0,
the massive token, or the first delimiter; Xiao et al. 2023, Sun et al. 2024 sec. 4), and how
small the value vectors are there (the "no-op" of Bondarenko et al. 2023)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from massive_checks.base.lazy import LazyModule
from massive_checks.engine.needs import Needs
from massive_checks.language.measure import PerSequence
from massive_checks.measures.base import PerLayer, register
from massive_checks.measures.panels import HeadScoresPanel

if TYPE_CHECKING:
    import torch

    from massive_checks.engine import hooks, readings
else:  # imported at first use: the spec schema reads the measure classes without torch
    torch = LazyModule("torch")
    readings = LazyModule("massive_checks.engine.readings")
    hooks = LazyModule("massive_checks.engine.hooks")


@register
class AttentionTo(PerLayer):
    """Per block, the mean attention weight over heads and queries q >= 1 (after the key) to
    `to`: position 0 (first), each sequence's top-1 token at the peak block (massive) or its
    first "." or newline (delimiter; sequences without one are left out). Per sequence, then
    the mean over sequences (or their coefficient of variation)."""

    measure: Literal["attention_to"] = "attention_to"
    to: Literal["first", "massive", "delimiter"] = "first"
    statistic: PerSequence = "paper"
    value_range: ClassVar = (0.0, 1.0)

    def needs(self, lm, layers):
        return Needs(sites={hooks.site(L, "attn.probs") for L in layers})

    def compute(self, view, layers):
        per_sequence = readings.head_scores_per_sequence(view, self.to, layers).mean(dim=2)  # [S, L]: mean over heads
        return {L: view.over_sequences(per_sequence[:, i], self.statistic) for i, L in enumerate(layers)}

    def figure(self, view, layers):
        """The block x head heatmap of the same scores (blocks not asked: blank)."""
        table = np.full((view.lm.n_layers, view.lm.n_heads), np.nan)
        table[layers] = readings.head_score_table(view, self.to, layers).numpy()
        return [HeadScoresPanel(table)]


@register
class ValueNorm(PerLayer):
    """Per block, the norm of the attention value vectors (mean over heads) at `token` (first:
    position 0; massive: each sequence's top-1 token at the peak block), divided by their mean
    norm at the sequence's other real tokens; per sequence, then the mean over sequences. Below 1:
    the heads that attend there read little (a "no-op")."""

    measure: Literal["value_norm"] = "value_norm"
    token: Literal["first", "massive"] = "first"
    value_range: ClassVar = (0.0, math.inf)

    def needs(self, lm, layers):
        return Needs(norms={(hooks.site(L, "attn.v"), lm.head_dim) for L in layers})

    def at(self, view, layer):
        norms = view.token_norms(hooks.site(layer, "attn.v"), view.lm.head_dim)  # [S, T], 0 at padding
        real = view.batch.attention_mask[:, : norms.shape[1]].bool()
        tokens = readings.key_tokens(view, self.token)  # None: position 0
        if tokens is None:
            tokens = torch.zeros(real.shape[0], dtype=torch.long)
        at = torch.nn.functional.one_hot(tokens, real.shape[1]).bool()  # [S, T]
        others = real & ~at
        there = (norms * at).sum(dim=1)
        elsewhere = (norms * others).sum(dim=1) / others.sum(dim=1).clamp(min=1)
        return view.mean(there / elsewhere)
