"""The model's mean next-token loss over real tokens: the only measure that needs logits."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from massive_checks.engine.needs import Needs
from massive_checks.measures.base import Measure, register


@register
class Loss(Measure):
    """Mean next-token cross-entropy over real tokens (nats)."""

    measure: Literal["loss"] = "loss"
    shape: ClassVar[str] = "value"
    value_range: ClassVar = (0.0, math.inf)

    def needs(self, lm, layers):
        return Needs(loss=True)

    def compute(self, view, layers):
        return view.loss()
