"""Head scores: how much attention each head pays to position 0 (or to each sequence's massive
token), from eager attention weights captured in hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import math

import numpy as np
from pydantic import field_validator

from ..spec.definitions import Needs
from ..spec.intervals import Estimate
from ..lazy import LazyModule
from ..output.panels import HeadScoresPanel
from .base import Measure, register
from .massive import peak_layer

if TYPE_CHECKING:
    import torch
    from ..engine import hooks, stats
else:  # imported at first use: the spec schema reads the measure classes without torch
    torch = LazyModule("torch")
    hooks = LazyModule("massive_checks.engine.hooks")
    stats = LazyModule("massive_checks.engine.stats")


def head_scores_per_sequence(view, to: str = "first") -> torch.Tensor:
    """[S, L, H] per sequence, the attention each head pays to position 0 ("first") or to the
    token of the sequence's largest activation at the peak layer ("massive")."""
    names = [hooks.site(layer, "attn.probs") for layer in range(view.lm.n_layers)]
    captured = view.captures(names)
    tokens = view.block(peak_layer(view)).top()[2] if to == "massive" else None
    return torch.stack([stats.key_attention(captured[n].attention_to_keys(), tokens) for n in names], dim=1)


def head_score_table(view, to: str = "first") -> torch.Tensor:
    """[L, H] mean over sequences of head_scores_per_sequence."""
    return head_scores_per_sequence(view, to).mean(dim=0)


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
        return [HeadScoresPanel(np.asarray(head_score_table(view)))]


@register
class HeadScore(_Head):
    """Mean attention one head pays to position 0 (or the massive token), queries q >= 1."""

    measure: Literal["head_score"] = "head_score"

    def compute(self, view, layers):
        layer, head = self.layer_head
        return view.mean(head_scores_per_sequence(view, self.to)[:, layer, head])


@register
class HeadRank(_Head):
    """The head's rank among all heads by head score (1 = highest; ties: lower layer, then lower
    head first), ranked again in every resample of the sequences."""

    measure: Literal["head_rank"] = "head_rank"
    value_range: ClassVar = (1.0, math.inf)

    def compute(self, view, layers):
        per_sequence = head_scores_per_sequence(view, self.to)  # [S, L, H]
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
