"""Head scores: how much attention each head pays to position 0 (or to each sequence's massive
token), from eager attention weights captured in hooks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from pydantic import field_validator

from massive_checks.base.lazy import LazyModule
from massive_checks.engine.needs import Needs
from massive_checks.language.intervals import Estimate
from massive_checks.measures.base import Measure, register
from massive_checks.measures.panels import HeadScoresPanel

if TYPE_CHECKING:
    import torch

    from massive_checks.engine import hooks, readings, stats
else:  # imported at first use: the spec schema reads the measure classes without torch
    torch = LazyModule("torch")
    readings = LazyModule("massive_checks.engine.readings")
    hooks = LazyModule("massive_checks.engine.hooks")
    stats = LazyModule("massive_checks.engine.stats")


class _Head(Measure):
    head: str  # "layer.head", quoted in YAML: 5.10 unquoted is the float 5.1
    to: Literal["first", "massive"] = "first"
    shape: ClassVar[str] = "value"
    value_range: ClassVar = (0.0, 1.0)

    @field_validator("head")
    @classmethod
    def _layer_dot_head(cls, value: str) -> str:
        layer, _, head = value.partition(".")
        if not (layer.isdigit() and head.isdigit()):
            raise ValueError("must be a quoted 'layer.head', e.g. \"5.10\"")
        return value

    @property
    def layer_head(self) -> tuple[int, int]:
        layer, _, head = self.head.partition(".")
        return int(layer), int(head)

    def needs(self, lm, layers):
        return Needs(sites={hooks.site(L, "attn.probs") for L in range(lm.n_layers)})

    def check_model(self, lm, layers):
        layer, head = self.layer_head
        if layer >= lm.n_layers or head >= lm.n_heads:
            raise ValueError(f"head {self.head}: {lm.name} has {lm.n_layers} layers x {lm.n_heads} heads")

    def figure(self, view, layers):
        return [HeadScoresPanel(np.asarray(readings.head_score_table(view)))]


@register
class HeadScore(_Head):
    """Mean attention one head pays to position 0 (or the massive token), queries q >= 1."""

    measure: Literal["head_score"] = "head_score"

    def compute(self, view, layers):
        layer, head = self.layer_head
        return view.mean(readings.head_scores_per_sequence(view, self.to)[:, layer, head])


@register
class HeadRank(_Head):
    """The head's rank among all heads by head score (1 = highest; ties: lower layer, then lower
    head first), ranked again in every resample of the sequences."""

    measure: Literal["head_rank"] = "head_rank"
    value_range: ClassVar = (1.0, math.inf)

    def compute(self, view, layers):
        per_sequence = readings.head_scores_per_sequence(view, self.to)  # [S, L, H]
        S, L, H = per_sequence.shape
        layer, head = self.layer_head
        flat = per_sequence.reshape(S, L * H).double().numpy()
        weights = view.bootstrap.weights(view.units())  # [B, S]
        scores = np.concatenate([flat.mean(axis=0)[None], weights @ flat / S])  # [1 + B, L*H]: all, then resamples
        target = layer * H + head
        own = scores[:, target : target + 1]
        before = (scores > own) | ((scores == own) & (np.arange(L * H) < target))
        ranks = 1.0 + before.sum(axis=1)
        return Estimate(float(ranks[0]), ranks[1:], view.units())
