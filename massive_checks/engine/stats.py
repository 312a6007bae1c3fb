"""Pure functions from captured statistics (capture.SiteStats, cpu tensors) to the numbers that
claims are about. No hooks, no models: easy to test against hand computations. The measures
(measures/) are built from these."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Cell:
    value: float  # |a|
    dim: int  # feature index
    token: int  # position in the sequence
    sequence: int | None = None  # which sequence (None: a max over sequences)

    def as_dict(self) -> dict:
        cell = {"value": self.value, "dim": self.dim, "token": self.token}
        return cell if self.sequence is None else {**cell, "sequence": self.sequence}


def is_massive(value, median, min_value: float, min_ratio: float):
    """THE massive rule, the only place it is written (Sun et al. 2024, claims.md C11): an
    activation is massive when |a| > min_value and |a| >= min_ratio x the median |a| of its hidden
    state (its own sequence's block output). Works on floats and on tensors."""
    return (value > min_value) & (value >= min_ratio * median)


def top_cells(cell_max: torch.Tensor, k: int) -> list[Cell]:
    """The k largest distinct (token, dim) cells of a [T, F] max-over-sequences map."""
    values, flat = cell_max.flatten().topk(min(k, cell_max.numel()))
    width = cell_max.shape[1]
    return [Cell(float(v), int(i) % width, int(i) // width) for v, i in zip(values, flat)]


def massive_examples(cells: tuple, medians: torch.Tensor, min_value: float, min_ratio: float) -> tuple[list[Cell], bool]:
    """Massive cells of each sequence among its K largest (cells: |a| [S, K], feature, token,
    signed; medians [S]), by the rule above with that sequence's median, and whether a
    sequence may have more than these (its K-th cell is massive too)."""
    values, features, tokens, _ = cells
    hits = is_massive(values, medians[:, None], min_value, min_ratio)  # [S, K]
    found = sorted(
        (Cell(float(values[s, j]), int(features[s, j]), int(tokens[s, j]), s) for s, j in hits.nonzero().tolist()),
        key=lambda c: (-c.value, c.sequence, c.token, c.dim),
    )
    return found, bool(hits[:, -1].any())


def massive_indices(maxima: torch.Tensor, medians: torch.Tensor, min_value: float, min_ratio: float) -> set[int]:
    """Exact: the features (or tokens) holding a massive cell in some sequence, from per-sequence
    maxima [S, F] (or [S, T]): a feature holds one exactly when its maximum passes the rule."""
    return {int(i) for i in is_massive(maxima, medians[:, None], min_value, min_ratio).any(dim=0).nonzero().flatten()}


def ratio(top1: float, median: float) -> float:
    return top1 / median if median > 0 else float("inf")


def key_attention(key_attn: torch.Tensor, key_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Per sequence, the attention each head pays to one key position.

    key_attn: [B, H, T] mean over queries q > k of attention to key k (per sequence).
    key_tokens: [B] key position per sequence (the massive token); None = position 0.
    Returns [B, H]."""
    if key_tokens is None:
        return key_attn[:, :, 0]
    return key_attn.gather(2, key_tokens.view(-1, 1, 1).expand(-1, key_attn.shape[1], 1)).squeeze(2)


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
    return max(growth, key=lambda name: growth[name])


def output_column(weight: torch.Tensor, dim: int, conv1d: bool) -> torch.Tensor:
    """[F_in] the weights producing output `dim`: weight[dim, :] of a Linear ([out, in]),
    weight[:, dim] of GPT-2's Conv1D ([in, out])."""
    return (weight[:, dim] if conv1d else weight[dim, :]).detach().float()


def top_shares(contributions: torch.Tensor, k: int) -> torch.Tensor:
    """What the k largest |contributions| of each row [B, F] (e.g. one per bootstrap resample, its
    own k) add up to, as a share of the row's sum (the down projection's output in that dim, less
    its bias): 1.0 = they write it all -> [B] (inf where a row's sum is 0)."""
    top = contributions.gather(1, contributions.abs().topk(min(k, contributions.shape[1]), dim=1).indices).sum(dim=1)
    total = contributions.sum(dim=1)
    return torch.where(total != 0, top / total, torch.inf)


def top_contributors(contributions: torch.Tensor, k: int) -> list[tuple[int, float]]:
    order = contributions.abs().argsort(descending=True)[:k]
    return [(int(i), float(contributions[i])) for i in order]


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: 0 when two captures agree."""
    scale = float(b.abs().max())
    return float((a - b).abs().max()) / scale if scale else float((a - b).abs().max())


def target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target]: logits [..., V] (float), targets [...] -> [...], as the
    target's logit minus the logsumexp. It consumes `logits` (overwritten in place): a second
    [..., V] tensor costs more than the exp itself at a 262k vocabulary (fresh pages for every
    element), and the values are the same as torch.logsumexp's."""
    picked = logits.gather(-1, targets[..., None]).squeeze(-1)
    peak = logits.amax(dim=-1, keepdim=True)
    return picked - (logits.sub_(peak).exp_().sum(dim=-1).log_() + peak.squeeze(-1))
