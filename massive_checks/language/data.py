"""Text data: the built-in passages or a user file, tokenized into a padded batch."""

from __future__ import annotations

import functools
import hashlib
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

    dataset: NonEmpty = BUILTIN  # "builtin", a path to .txt (one passage per line) / .jsonl ("text"), or hf:... (HUB)
    samples: Annotated[int, Field(ge=1, le=100_000)] = 16  # taken in file order (deterministic)
    seq_len: Annotated[int, Field(ge=1, le=100_000)] = 128  # longer passages are truncated; shorter ones padded
    whole: bool = False  # a longer passage is an error, never truncated (contrast sets: windows count from the end)
    # Start every passage with the tokenizer's bos_token (true) or without it (false), whatever the
    # tokenizer does by default (null). Known only once a model is loaded: true on a tokenizer
    # without a bos_token is that model's error.
    bos: bool | None = None


def read_passages(dataset: str) -> list[str]:
    return [record["text"] for record in read_records(dataset)]


BUILTIN_FILE = "data/passages.jsonl"  # one {"text", "register"} per line; the first 49 are the original set


def read_records(dataset: str) -> list[dict[str, Any]]:
    """{"text", and for .jsonl lines that have one, "prompt" (a prefix of the text)} per passage."""
    if dataset.startswith(HUB):
        return [{"text": text} for text in _hub_dataset(dataset)[0]]
    if dataset == BUILTIN:  # 259 passages of the project's own writing: prose, dialogue, code, lists, numbers
        text = resources.files("massive_checks").joinpath(BUILTIN_FILE).read_text("utf-8")
        return [{"text": json.loads(line)["text"]} for line in text.splitlines() if line.strip()]
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


# A dataset of the `datasets` library (the `hf` extra): hf:PATH[@REVISION][:SPLIT], PATH being
# NAME/CONFIG (wikitext/wikitext-2-raw-v1), ORG/NAME/CONFIG (CONFIG `default` where there is none),
# or a local folder of data files. Its passages are the rows of the split's `text` column with at
# least HUB_MIN_WORDS words, in the split's order: deterministic, and no heading or blank line.
HUB = "hf:"
HUB_MIN_WORDS = 20


def dataset_revision(dataset: str) -> str | None:
    """What a hub dataset's passages were read from (recorded in goldens and results): the commit
    it resolved to on the hub, else the revision asked for, else a hash of a local folder's text."""
    return _hub_dataset(dataset)[1] if dataset.startswith(HUB) else None


def _hub_address(dataset: str) -> tuple[str, str | None, str | None, str]:
    """hf:PATH[@REVISION][:SPLIT] -> (name or folder, config, revision, split)."""
    body = dataset.removeprefix(HUB)
    path, _, split = body.rpartition(":") if ":" in body else (body, "", "test")
    path, _, revision = path.partition("@")
    if Path(path).is_dir():
        return path, None, revision or None, split or "test"
    parts = path.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise DataError(
            f"dataset {dataset!r}: write hf:NAME/CONFIG[:SPLIT] or hf:ORG/NAME/CONFIG[:SPLIT] (CONFIG `default` "
            "for a dataset without configurations), e.g. hf:wikitext/wikitext-2-raw-v1:test, or hf:FOLDER:SPLIT"
        )
    return "/".join(parts[:-1]), parts[-1], revision or None, split or "test"


@functools.cache  # one read per process, however many specs and models read it
def _hub_dataset(dataset: str) -> tuple[tuple[str, ...], str]:
    name, config, revision, split = _hub_address(dataset)
    try:
        import datasets  # type: ignore[import-untyped]  # an optional extra without type hints
    except ImportError:
        raise DataError(f"dataset {dataset!r} needs the `datasets` library: pip install 'massive_checks[hf]'") from None
    try:
        rows = datasets.load_dataset(name, None if config == "default" else config, split=split, revision=revision)
    except Exception as exc:  # the library raises many kinds (no hub, no such config or split, a bad file)
        raise DataError(
            f"dataset {dataset!r} could not be loaded ({type(exc).__name__}: {str(exc)[:300]}); a hub dataset needs "
            "the hub or its local cache (HF_DATASETS_OFFLINE=1 reads the cache only)"
        ) from None
    if "text" not in rows.column_names:
        raise DataError(f"dataset {dataset!r} has no `text` column (columns: {', '.join(rows.column_names)})")
    texts = tuple(t.strip() for t in rows["text"] if isinstance(t, str) and len(t.split()) >= HUB_MIN_WORDS)
    if Path(name).is_dir():
        resolved = "local-" + hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    else:
        resolved = _hub_commit(name, revision) or revision or "unresolved"
    return texts, resolved


def _hub_commit(name: str, revision: str | None) -> str | None:
    """The commit a dataset revision (a branch, tag or commit; None: main) resolves to on the hub."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name, revision=revision).sha
    except Exception:  # offline, or a cached dataset: the revision asked for is recorded instead
        return None


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
