"""Greedy generation with the KV cache, steered or not, for a batch of left-padded prompts."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

from massive_checks.engine import hooks
from massive_checks.engine.models import LoadedModel
from massive_checks.steering.edit import Steering, steered


def pad_id(lm: LoadedModel) -> int:
    return lm.tokenizer.pad_token_id or 0


def left_padded(lm: LoadedModel, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows right-aligned in one batch: ids [B, T] (padding: the pad token) and mask [B, T]."""
    pad = pad_id(lm)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids, mask


@torch.no_grad()
def generate(
    lm: LoadedModel,
    prompts: list[list[int]],
    max_new_tokens: int,
    steering: Steering | None = None,
    vector: torch.Tensor | None = None,
    use_cache: bool = True,
    prefilled: Callable[[Any], None] | None = None,
) -> list[list[int]]:
    """Greedy continuations (token ids, max_new_tokens each, cut after an end-of-sequence token).
    Prompts are left-padded into one batch; positions count real tokens, so a token's position is
    the same with and without the cache, and with and without padding. `prefilled` is called with
    the prompts' forward output (logits, KV cache) before decoding goes on from it."""
    ids, mask = left_padded(lm, prompts)
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    prompt_length = mask.sum(dim=1)
    positions = hooks.token_positions(mask)
    new: list[torch.Tensor] = []
    past = None
    with steered(lm, steering, vector) as attached:
        for step in range(max_new_tokens):
            if use_cache and past is not None:
                step_ids, step_mask, step_pos = new[-1][:, None], torch.ones_like(new[-1])[:, None], positions[:, -1:]
            else:
                step_ids, step_mask, step_pos = ids, mask, positions
            output = attached.forward(
                lm.model,
                step_ids,
                mask,
                step=step,
                positions=step_pos,
                prompt_length=prompt_length,
                token_mask=step_mask,
                position_ids=step_pos,
                use_cache=use_cache,
                logits_to_keep=1,
                **cache_argument(lm.model, past),
            )
            past = cache_of(output) if use_cache else None
            if step == 0 and prefilled is not None:
                prefilled(output)
            token = output.logits[:, -1].argmax(dim=-1)  # [B]
            new.append(token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(token)[:, None]], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
    tokens = torch.stack(new, dim=1).tolist() if new else [[] for _ in prompts]
    return [_cut_at_eos(row, lm.tokenizer.eos_token_id) for row in tokens]


def cache_argument(model, cache) -> dict:
    """The KV cache as the model's forward takes it: `cache=` (transformers >= 5.25, where
    `past_key_values=` is deprecated, to be removed in 5.40) or `past_key_values=` (earlier)."""
    return {_cache_keyword(type(model)): cache}  # type: ignore[arg-type]  # a class is hashable


@functools.cache
def _cache_keyword(model_class: Any) -> str:
    """Read once per model class, not at every generation step."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_of(output):
    """The KV cache a forward returned (`cache`, or `past_key_values` before transformers 5.25)."""
    cache = output.get("cache")
    return cache if cache is not None else output.get("past_key_values")


def _cut_at_eos(row: list[int], eos: int | None) -> list[int]:
    return row[: row.index(eos) + 1] if eos is not None and eos in row else row
