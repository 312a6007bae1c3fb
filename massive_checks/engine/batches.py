"""A dataset tokenized into one right-padded batch with its padding mask (and each response's first
token), what every pass of a (model, data) reads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

from massive_checks.base.errors import DataError
from massive_checks.language.data import DataConfig, read_records


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long, 1 = real token, 0 = padding (right-padded)
    ids_hash: str  # sha256 of the real token ids: keys caches and goldens
    response_start: torch.Tensor | None = None  # [B] first token of the response (1 without a prompt)
    passages_hash: str = ""  # sha256 of the passages' text, whatever the tokenizer: pairs models by passage

    @property
    def lengths(self) -> torch.Tensor:  # [B]
        return self.attention_mask.sum(dim=1)


def tokenize(tokenizer, config: DataConfig) -> Batch:
    records = read_records(config.dataset)
    if len(records) < config.samples:
        raise DataError(f"dataset {config.dataset!r} has {len(records)} passages, {config.samples} requested")
    records = records[: config.samples]
    plain = [tokenizer(record["text"])["input_ids"] for record in records]
    rows = [with_bos(tokenizer, row, config.bos) for row in plain]
    shift = [len(row) - len(ids) for row, ids in zip(rows, plain)]  # bos added (+1), dropped (-1) or not (0)
    for number, row in enumerate(rows, start=1):
        if config.whole and len(row) > config.seq_len:
            raise DataError(
                f"{config.dataset}: passage {number} has {len(row)} tokens, more than {config.seq_len}; "
                f"windows count from its end, so it is not truncated: shorten it"
            )
    rows = [row[: config.seq_len] for row in rows]
    width = max(len(row) for row in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    digest = hashlib.sha256()
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        digest.update(json.dumps(row).encode())
    starts = torch.tensor(
        [
            max(1, response_start(tokenizer, r["text"], r.get("prompt"), len(row) - s) + s)
            for r, row, s in zip(records, rows, shift)
        ]
    )
    passages = hashlib.sha256(json.dumps([[r.get("prompt"), r["text"]] for r in records]).encode()).hexdigest()[:16]
    return Batch(ids, mask, digest.hexdigest()[:16], starts, passages)


def with_bos(tokenizer, ids: list[int], bos: bool | None) -> list[int]:
    """The token ids starting with the tokenizer's bos_token (bos true) or not (false); as they
    are (None)."""
    bos_id = tokenizer.bos_token_id
    if bos is None:
        return ids
    if bos_id is None:
        if bos:
            raise DataError("data: bos: true, but this model's tokenizer has no bos_token (write bos: false or leave it out)")
        return ids
    starts = bool(ids) and ids[0] == bos_id
    if bos and not starts:
        return [bos_id, *ids]
    return ids[1:] if not bos and starts else ids


def response_start(tokenizer, text: str, prompt: str | None, length: int) -> int:
    """Index of the response's first token: the first token reaching past the prompt's characters
    (a token straddling the boundary counts as the response's). 1 without a prompt: the text after
    position 0. Needs a fast tokenizer's offsets; else the prompt's own token count."""
    if not prompt:
        return 1
    try:
        offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        start = next(i for i, (a, b) in enumerate(offsets) if b > len(prompt) and b > a)
    except (NotImplementedError, ValueError, KeyError, StopIteration):
        start = len(tokenizer(prompt)["input_ids"])
    if start >= length:
        raise DataError(f"passage {text[:40]!r}...: its response starts at token {start}, past its {length} tokens")
    return max(start, 1)
