"""Text data: the built-in passages or a user file, tokenized into a padded batch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from ..errors import DataError
from ..lazy import LazyModule
from ..spec.definitions import Frozen, NonEmpty

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")  # imported at first use: the spec schema reads this module without torch

BUILTIN = "builtin"


class DataConfig(Frozen):
    """The texts a pass reads: the first `samples` passages of a dataset, tokenized to `seq_len`."""

    dataset: NonEmpty = BUILTIN  # "builtin" or a path to .txt (one passage per line) / .jsonl ("text")
    samples: Annotated[int, Field(ge=1, le=100_000)] = 16  # taken in file order (deterministic)
    seq_len: Annotated[int, Field(ge=1, le=100_000)] = 128  # longer passages are truncated; shorter ones padded
    whole: bool = False  # a longer passage is an error, never truncated (contrast sets: windows count from the end)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long, 1 = real token, 0 = padding (right-padded)
    ids_hash: str  # sha256 of the real token ids: keys caches and goldens
    response_start: torch.Tensor | None = None  # [B] first token of the response (1 without a prompt)

    @property
    def lengths(self) -> torch.Tensor:  # [B]
        return self.attention_mask.sum(dim=1)


def read_passages(dataset: str) -> list[str]:
    return [record["text"] for record in read_records(dataset)]


def read_records(dataset: str) -> list[dict]:
    """{"text", and for .jsonl lines that have one, "prompt" (a prefix of the text)} per passage."""
    if dataset == BUILTIN:
        text = resources.files("massive_checks").joinpath("data/passages.txt").read_text("utf-8")
        return [{"text": line.strip()} for line in text.splitlines() if line.strip()]
    path = Path(dataset)
    try:
        exists = path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        exists = False
    if not exists:
        raise DataError(f"dataset file {dataset[:200]!r} does not exist")
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".txt":
        return [{"text": line.strip()} for line in _text_of(path).splitlines() if line.strip()]
    raise DataError(f"dataset {dataset!r}: expected a .txt (one passage per line) or .jsonl file")


MAX_DATA_BYTES = 1 << 30  # a data or contrast file over 1 GiB is refused before it is read


def _text_of(path: Path) -> str:
    """A data file's text: an unreadable, oversized or non-UTF-8 file is a DataError naming it."""
    try:
        if path.stat().st_size > MAX_DATA_BYTES:
            raise DataError(f"{path}: {path.stat().st_size} bytes; a data or contrast file is at most {MAX_DATA_BYTES}")
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{str(path)[:200]}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x})") from None


def jsonl_lines(path: Path, field: str = "text"):
    """(where, record) per non-blank line, where = "path:line"; each record a mapping with a string
    `field` (DataError naming file and line otherwise)."""
    for number, line in enumerate(_text_of(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
        except (RecursionError, ValueError) as exc:  # nested too deeply; a number of 4,301+ digits
            raise DataError(f"{where}: not a record this tool reads ({type(exc).__name__}: {str(exc)[:80]})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise DataError(f'{where}: each line needs a string field "{field}"')
        yield where, record


def _read_jsonl(path: Path) -> list[dict]:
    passages = []
    for where, record in jsonl_lines(path):
        prompt = record.get("prompt")
        if prompt is not None and not (isinstance(prompt, str) and record["text"].startswith(prompt)):
            raise DataError(f'{where}: "prompt" must be a string the text starts with')
        passages.append({"text": record["text"], "prompt": prompt})
    return passages


def tokenize(tokenizer, config: DataConfig) -> Batch:
    records = read_records(config.dataset)
    if len(records) < config.samples:
        raise DataError(f"dataset {config.dataset!r} has {len(records)} passages, {config.samples} requested")
    records = records[: config.samples]
    rows = [tokenizer(record["text"])["input_ids"] for record in records]
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
    starts = torch.tensor([response_start(tokenizer, r["text"], r.get("prompt"), len(row)) for r, row in zip(records, rows)])
    return Batch(ids, mask, digest.hexdigest()[:16], starts)


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
