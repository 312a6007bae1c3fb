"""The residual stream's norm per block (Heimersheim & Turner 2023: it grows roughly exponentially
over the blocks)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

from massive_checks.base.lazy import LazyModule
from massive_checks.engine.needs import Needs
from massive_checks.language.measure import PerSequence
from massive_checks.measures.base import PerLayer, register

if TYPE_CHECKING:
    from massive_checks.engine import hooks
else:  # imported at first use: the spec schema reads the measure classes without torch
    hooks = LazyModule("massive_checks.engine.hooks")

TOKENS = {  # which real tokens a norm is averaged over; a window's `all` excludes position 0: one word, one meaning
    "rest": "every real token after position 0",
    "first": "position 0 only",
    "every": "every real token, position 0 included",
}


@register
class ResidualNorm(PerLayer):
    """Per block, the mean L2 norm of the block output over `tokens`: rest (every real token
    after position 0, the default), first (position 0) or every (all real tokens). Per sequence,
    then the mean over sequences (or their coefficient of variation)."""

    measure: Literal["residual_norm"] = "residual_norm"
    tokens: Literal["rest", "first", "every"] = "rest"
    statistic: PerSequence = "paper"
    value_range: ClassVar = (0.0, math.inf)

    def needs(self, lm, layers):
        return Needs(norms={(hooks.site(L, "out"), 0) for L in layers})

    def at(self, view, layer):
        norms = view.token_norms(hooks.site(layer, "out"))  # [S, T], 0 at padding
        real = view.batch.attention_mask[:, : norms.shape[1]].bool().clone()
        if self.tokens == "rest":
            real[:, 0] = False
        elif self.tokens == "first":
            real[:, 1:] = False
        per_sequence = (norms * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
        return view.over_sequences(per_sequence, self.statistic)
