"""Text data: the built-in passages or a user file, tokenized into a padded batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from massive_checks.base.errors import DataError
from massive_checks.base.lazy import LazyModule
from massive_checks.language.definitions import Frozen, NonEmpty

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
    # Start every passage with the tokenizer's bos_token (true) or without it (false), whatever the
    # tokenizer does by default (null). Known only once a model is loaded: true on a tokenizer
    # without a bos_token is that model's error.
    bos: bool | None = None


def read_passages(dataset: str) -> list[str]:
    return [record["text"] for record in read_records(dataset)]


def read_records(dataset: str) -> list[dict[str, Any]]:
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


def jsonl_lines(path: Path, field: str = "text") -> Iterator[tuple[str, dict[str, Any]]]:
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


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    passages = []
    for where, record in jsonl_lines(path):
        prompt = record.get("prompt")
        if prompt is not None and not (isinstance(prompt, str) and record["text"].startswith(prompt)):
            raise DataError(f'{where}: "prompt" must be a string the text starts with')
        passages.append({"text": record["text"], "prompt": prompt})
    return passages
