"""Text data: the built-in passages or a user file, tokenized into a padded batch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .errors import DataError

BUILTIN = "builtin"


@dataclass(frozen=True)
class DataConfig:
    dataset: str = BUILTIN  # "builtin" or a path to .txt (one passage per line) / .jsonl ("text")
    samples: int = 16  # number of passages used, taken in file order (deterministic)
    seq_len: int = 128  # passages are truncated to this many tokens; shorter ones are padded


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long, 1 = real token, 0 = padding (right-padded)
    ids_hash: str  # sha256 of the real token ids: keys caches and goldens

    @property
    def lengths(self) -> torch.Tensor:  # [B]
        return self.attention_mask.sum(dim=1)


def read_passages(dataset: str) -> list[str]:
    if dataset == BUILTIN:
        text = resources.files("massive_checks").joinpath("data/passages.txt").read_text("utf-8")
        return [line.strip() for line in text.splitlines() if line.strip()]
    path = Path(dataset)
    if not path.is_file():
        raise DataError(f"dataset file {dataset!r} does not exist")
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
    raise DataError(f"dataset {dataset!r}: expected a .txt (one passage per line) or .jsonl file")


def _read_jsonl(path: Path) -> list[str]:
    passages = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f'{path}:{number}: each line needs a string field "text"')
        passages.append(record["text"])
    return passages


def tokenize(tokenizer, config: DataConfig) -> Batch:
    passages = read_passages(config.dataset)
    if len(passages) < config.samples:
        raise DataError(
            f"dataset {config.dataset!r} has {len(passages)} passages, {config.samples} requested"
        )
    rows = [tokenizer(text)["input_ids"][: config.seq_len] for text in passages[: config.samples]]
    width = max(len(row) for row in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    digest = hashlib.sha256()
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        digest.update(json.dumps(row).encode())
    return Batch(ids, mask, digest.hexdigest()[:16])
