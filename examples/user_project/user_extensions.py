"""A user's own additions to the spec language, through massive_checks.api only: a measure, an
intervention target and a trait judge. conftest.py imports this module; a package would name it
in an entry point of group `massive_checks.measures` instead."""

from __future__ import annotations

from typing import Literal

from massive_checks import api


@api.register
class Top1Share(api.PerLayer):
    """top-1 / (top-1 + top-2 + top-3) of the block output (paper statistic): how much one cell
    dominates the block's largest activations."""

    measure: Literal["top1_share"] = "top1_share"

    def at(self, view, layer):
        tops = [api.top_value(view, layer, k) for k in (1, 2, 3)]
        return tops[0] / sum(tops)  # Estimates: the interval is resampled with the values


def scale_dims(lm, ablation: api.Ablation) -> api.HookFn:
    """`scale:DIMS@LAYERS=value:X` multiplies residual dims after those blocks by X (default 0)."""
    factor = ablation.value  # 0.0 for the default mode, zero

    def edit(tensor, context):  # tensor [B, T, D]: the block output
        scaled = tensor.clone()
        scaled[..., list(ablation.units)] *= factor
        return scaled

    return edit


api.register_intervention("scale", "out", scale_dims)


def exclamations(texts: list[str]) -> list[float]:
    """A trait judge: the share of a text's sentences that end in '!' (0 for an empty text)."""
    scores = []
    for text in texts:
        ends = [c for c in text if c in ".!?"]
        scores.append(ends.count("!") / len(ends) if ends else 0.0)
    return scores
