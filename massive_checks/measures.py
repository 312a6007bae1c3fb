"""Pure functions from captured statistics (hooks.SiteStats, cpu tensors) to the numbers that
claims are about. No hooks, no models: easy to test against hand computations."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Cell:
    value: float  # |a|
    dim: int  # feature index
    token: int  # position in the sequence

    def as_dict(self) -> dict:
        return {"value": self.value, "dim": self.dim, "token": self.token}


def top_cells(cell_max: torch.Tensor, k: int) -> list[Cell]:
    """The k largest distinct (token, dim) cells of a [T, F] max-over-sequences map."""
    values, flat = cell_max.flatten().topk(min(k, cell_max.numel()))
    width = cell_max.shape[1]
    return [Cell(float(v), int(i) % width, int(i) // width) for v, i in zip(values, flat)]


def massive_cells(cell_max: torch.Tensor, median: float, min_value: float, min_ratio: float) -> list[Cell]:
    """The paper's rule (Sun et al. 2024): |a| > min_value and |a| >= min_ratio x median |a|."""
    threshold = max(min_value, min_ratio * median)
    hits = (cell_max > threshold).nonzero().tolist()  # [(token, dim)]
    cells = [Cell(float(cell_max[t, d]), d, t) for t, d in hits]
    return sorted(cells, key=lambda c: -c.value)


def ratio(top1: float, median: float) -> float:
    return top1 / median if median > 0 else float("inf")


def head_scores(key_attn: torch.Tensor, key_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Mean attention a head pays to one key position, averaged over sequences.

    key_attn: [B, H, T] mean over queries q > k of attention to key k (per sequence).
    key_tokens: [B] key position per sequence (the massive token); None = position 0.
    Returns [H]."""
    if key_tokens is None:
        return key_attn[:, :, 0].mean(dim=0)
    picked = key_attn.gather(2, key_tokens.view(-1, 1, 1).expand(-1, key_attn.shape[1], 1))
    return picked.squeeze(2).mean(dim=0)


def rank_heads(scores: torch.Tensor) -> list[tuple[int, int]]:
    """[L, H] scores -> (layer, head) pairs, best first (ties: lower layer, lower head first)."""
    L, H = scores.shape
    flat = scores.flatten().tolist()
    order = sorted(range(L * H), key=lambda i: (-flat[i], i))
    return [(i // H, i % H) for i in order]


def relative_change(before: float, after: float) -> float:
    return (after - before) / abs(before) if before else float("inf")


def explosion_point(maxima: dict[str, float]) -> str:
    """The checkpoint (in flow order) whose max |a| grows most over the previous one."""
    names = list(maxima)
    growth = {b: maxima[b] / maxima[a] if maxima[a] else float("inf") for a, b in zip(names, names[1:])}
    return max(growth, key=growth.get)


def neuron_contributions(down_in_mean: torch.Tensor, weight: torch.Tensor, dim: int, conv1d: bool) -> torch.Tensor:
    """Signed contribution of each intermediate unit to output `dim` of the down projection.

    down_in_mean: [F] mean activation of the units (at the token of interest).
    weight: the down projection weight; Linear stores [D_out, F_in], GPT-2's Conv1D [F_in, D_out],
    so the weights producing output `dim` are weight[dim, :] or weight[:, dim] respectively.
    Returns [F]: activation x weight (the bias is not a unit's contribution)."""
    column = weight[:, dim] if conv1d else weight[dim, :]
    return down_in_mean.float() * column.detach().float().cpu()


def top_contributors(contributions: torch.Tensor, k: int) -> list[tuple[int, float]]:
    order = contributions.abs().argsort(descending=True)[:k]
    return [(int(i), float(contributions[i])) for i in order]


def format_value(value) -> str:
    """How observed values print in tables: 6 significant digits, sets sorted, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
    if isinstance(value, (set, frozenset, tuple)):
        return "{" + ", ".join(map(str, sorted(value))) + "}" if not isinstance(value, tuple) else str(list(value))
    return str(value)


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: 0 when two captures agree."""
    scale = float(b.abs().max())
    return float((a - b).abs().max()) / scale if scale else float((a - b).abs().max())
