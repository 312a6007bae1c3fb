"""Where massive activations are, by the paper's rule (stats.is_massive, with the spec's
`massive:` parameters), applied per sequence with that sequence's median."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from .. import hooks, stats
from .base import Measure, register


def massive_dims(view, layer: int) -> set[int]:
    """Dims holding a massive cell in some sequence."""
    block = view.block(layer)
    return stats.massive_indices(block.dim_max(), block.median(), view.min_value, view.min_ratio)


def massive_tokens(view, layer: int) -> set[int]:
    block = view.block(layer)
    return stats.massive_indices(block.token_max(), block.median(), view.min_value, view.min_ratio)


def massive_examples(view, layer: int) -> tuple[list[stats.Cell], bool]:
    """Massive cells among each sequence's largest, and whether there may be more."""
    block = view.block(layer)
    return stats.massive_examples(block.cells(), block.median(), view.min_value, view.min_ratio)


def massive_cells(view, layers: list[int], dims: list[int] | None = None) -> dict:
    """{(layer, dim): (positions per sequence, mean signed value there)} for the cells where each
    dim is massive after each block (dims None: every dim massive there). One pass reads all the
    every-token values needed."""
    wanted = [(hooks.site(L, "out"), d) for L in layers for d in (dims if dims is not None else sorted(massive_dims(view, L)))]
    names = sorted({name for name, _ in wanted})
    captured = view.captures(names, names, slices=wanted)
    return {(hooks.layer_of(name), d): _massive_rows(view, captured[name], d) for name, d in wanted}


def _massive_rows(view, site_stats, dim: int) -> tuple[tuple[tuple[int, ...], ...], float]:
    signed = site_stats.slice(dim)  # [S, T]
    hits = stats.is_massive(signed.abs(), site_stats.median()[:, None], view.min_value, view.min_ratio)
    rows = tuple(tuple(int(t) for t in row.nonzero().flatten()) for row in hits)
    return rows, (float(signed[hits].mean()) if bool(hits.any()) else 0.0)


def first_delimiters(view) -> torch.Tensor:
    """[S] position of each sequence's first delimiter token after position 0 (-1: none)."""
    batch, tokenizer = view.batch, view.lm.tokenizer
    vocab = {int(i): tokenizer.decode([int(i)]) for i in batch.input_ids.unique()}
    delimiter = torch.tensor([[("." in vocab[int(i)] or "\n" in vocab[int(i)]) for i in row] for row in batch.input_ids])
    delimiter[:, 0] = False
    delimiter &= batch.attention_mask.bool()
    first = delimiter.float().argmax(dim=1)
    return torch.where(delimiter.any(dim=1), first, torch.full_like(first, -1))


def peak_layer(view) -> int:
    return max(range(view.lm.n_layers), key=lambda L: float(view.block(L).cell_max.max()))


def cells_panel(view) -> dict:
    """The figure panel of where-measures: max |a| over sequences of the first 8 tokens at the
    peak layer, massive dims marked."""
    peak = peak_layer(view)
    return {"cells": view.block(peak).cell_max[:8].numpy(), "cells_layer": peak,
            "massive_dims": sorted(massive_dims(view, peak))}


class _Where(Measure):
    shape: ClassVar[str] = "set"
    layered: ClassVar[bool] = True
    uses_massive_rule: ClassVar[bool] = True

    def figure(self, view, layers):
        return cells_panel(view)


@register
class MassiveDims(_Where):
    """Residual dims holding a massive activation in some sequence, over the layer range."""
    measure: Literal["massive_dims"] = "massive_dims"
    dims_in_bound: ClassVar[bool] = True

    def compute(self, view, layers):
        return frozenset().union(*(massive_dims(view, L) for L in layers))


@register
class MassiveTokens(_Where):
    """Token positions holding a massive activation in some sequence, over the layer range."""
    measure: Literal["massive_tokens"] = "massive_tokens"

    def compute(self, view, layers):
        return frozenset().union(*(massive_tokens(view, L) for L in layers))


@register
class EmergenceLayer(Measure):
    """The first layer (of the range) holding a massive activation; None if none does."""
    measure: Literal["emergence_layer"] = "emergence_layer"
    shape: ClassVar[str] = "value"
    layered: ClassVar[bool] = True
    uses_massive_rule: ClassVar[bool] = True

    def compute(self, view, layers):
        return next((layer for layer in layers if massive_dims(view, layer)), None)


@register
class MassiveElsewhere(Measure):
    """Share of massive positions (sequence, token), over blocks, on neither the sequence's first
    token nor its first delimiter ("." or a newline); None when nothing is massive."""
    measure: Literal["massive_elsewhere"] = "massive_elsewhere"
    shape: ClassVar[str] = "value"
    layered: ClassVar[bool] = True
    uses_massive_rule: ClassVar[bool] = True

    def compute(self, view, layers):
        delimiters = first_delimiters(view)  # [S]
        total = elsewhere = 0
        for layer in layers:
            block = view.block(layer)
            hits = stats.is_massive(block.token_max(), block.median()[:, None], view.min_value, view.min_ratio)
            positions = torch.arange(hits.shape[1])[None, :]
            allowed = (positions == 0) | (positions == delimiters[:, None])
            total += int(hits.sum())
            elsewhere += int((hits & ~allowed).sum())
        return elsewhere / total if total else None
