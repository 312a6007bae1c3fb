"""Head scores: how much attention each head pays to position 0 (or to each sequence's massive
token), from eager attention weights captured in hooks."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import field_validator

from .. import hooks, stats
from ..capture import Needs
from .base import Measure, register
from .massive import peak_layer


def head_score_table(view, to: str = "first") -> torch.Tensor:
    """[L, H] mean attention to position 0 ("first") or, per sequence, to the token of its
    largest activation at the peak layer ("massive")."""
    names = [hooks.site(layer, "attn.probs") for layer in range(view.lm.n_layers)]
    captured = view.captures(names)
    tokens = view.block(peak_layer(view)).top()[2] if to == "massive" else None
    return torch.stack([stats.head_scores(captured[n].attention_to_keys(), tokens) for n in names])


class _Head(Measure):
    head: str  # "layer.head", quoted in YAML: 5.10 unquoted is the float 5.1
    to: Literal["first", "massive"] = "first"
    shape: ClassVar[str] = "value"

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
        return {"head_scores": head_score_table(view).tolist()}


@register
class HeadScore(_Head):
    """Mean attention one head pays to position 0 (or the massive token), queries q >= 1."""
    measure: Literal["head_score"] = "head_score"

    def compute(self, view, layers):
        layer, head = self.layer_head
        return float(head_score_table(view, self.to)[layer, head])


@register
class HeadRank(_Head):
    """The head's rank among all heads by head score (1 = highest)."""
    measure: Literal["head_rank"] = "head_rank"

    def compute(self, view, layers):
        return stats.rank_heads(head_score_table(view, self.to)).index(self.layer_head) + 1
