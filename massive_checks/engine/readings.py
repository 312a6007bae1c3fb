"""What measures and interventions read off one configuration's captures (`view`: a
session.ConfigView): where the massive activations are, by the paper's rule (stats.is_massive, with
the spec's `massive:` parameters, per sequence with that sequence's median), the peak block, and
how much attention each head pays to position 0 or to the massive token. Measures report these;
the session resolves `#massive` and `heads:top` interventions with them."""

from __future__ import annotations

import torch

from massive_checks.engine import hooks, stats


def massive_dims(view, layer: int) -> set[int]:
    """Dims holding a massive cell in some sequence."""
    block = view.block(layer)
    return stats.massive_indices(block.dim_max(), block.median(), view.min_value, view.min_ratio)


def massive_hits(view, layer: int, axis: str) -> torch.Tensor:
    """[S, F] (axis "dim") or [S, T] ("token") bool: where each sequence holds a massive cell."""
    block = view.block(layer)
    maxima = block.dim_max() if axis == "dim" else block.token_max()
    return stats.is_massive(maxima, block.median()[:, None], view.min_value, view.min_ratio)


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


def key_tokens(view, to: str) -> torch.Tensor | None:
    """[S] the key position each sequence is asked about: None for position 0 ("first"), the
    token of its largest activation at the peak block ("massive"), or its first delimiter
    ("delimiter"; -1 where it has none)."""
    if to == "first":
        return None
    if to == "massive":
        return view.block(peak_layer(view)).top()[2]
    if to == "delimiter":
        return first_delimiters(view)
    raise ValueError(f"unknown key {to!r}: first, massive or delimiter")


def head_scores_per_sequence(view, to: str = "first", layers=None) -> torch.Tensor:
    """[S, L, H] per sequence, the attention each head of each block (of `layers`; None: every
    block) pays to key_tokens(view, to), mean over the queries after it; nan for a sequence
    without such a token, or with it last (no query after it)."""
    names = [hooks.site(layer, "attn.probs") for layer in (range(view.lm.n_layers) if layers is None else layers)]
    captured = view.captures(names)
    tokens = key_tokens(view, to)
    missing = None
    if tokens is not None:
        missing = (tokens < 0) | (tokens >= view.batch.lengths - 1)
        tokens = tokens.clamp(min=0)
    scores = torch.stack([stats.key_attention(captured[n].attention_to_keys(), tokens) for n in names], dim=1)
    return scores if missing is None else scores.masked_fill(missing[:, None, None], float("nan"))


def head_score_table(view, to: str = "first", layers=None) -> torch.Tensor:
    """[L, H] mean over sequences (those with such a token) of head_scores_per_sequence."""
    return head_scores_per_sequence(view, to, layers).nanmean(dim=0)
