"""Contrast sets for steering vectors: JSONL, one example per line,
`{"text": ..., "label": "pos" | "neg"}`, optionally `"prompt"` / `"response"` (text = prompt +
response, so a window can count from the response's first token), `"split"` ("train" |
"heldout"; without it, every fifth example of each label is held out), and the units the examples
are resampled by (intervals.Units factors), because examples are not independent:
  "group"  the unit an example belongs to (default: its prompt, so a prompt's pos and neg
           responses are resampled together; an example without a prompt is its own unit);
  "form"   a second unit crossed with the first (e.g. the response template it was written from;
           default: none). With forms, resamples draw groups and forms independently (two-way).

Built-in sets (massive_checks/data/contrast/, written for this project by tools/make_contrast.py):
  refusal    100 prompts, each with a refusing (pos) and a complying (neg) response; 20 response
             forms per label: 16 in the 80 training prompts, the other 4 only in the 20 held-out
             ones (held-out accuracy is about unseen prompts and unseen forms, with no opening
             shared with training)
  sentiment  100 review openings, each with a positive (pos) and a negative (neg) verdict; 20
             verdict forms per label, split the same way

Evaluation prompts (massive_checks/data/prompts/, tools/make_prompts.py) are what steering is
scored on: other topics and templates than the contrast sets' training texts.
  refusal    64 benign requests in three templates ("Human: ..\nAI:", "Request: ..\nReply:", "Q: ..\nA:")
  sentiment  60 openings of personal notes on everyday things, in four templates
A user's set is a .txt file (one prompt per line, used as given) or a .jsonl file of
{"prompt": ...} lines."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from massive_checks.base.errors import DataError
from massive_checks.base.lazy import LazyModule
from massive_checks.language.data import DataConfig, jsonl_lines, read_passages

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")  # imported at first use: the spec schema reads this module without torch

BUILTIN_SETS = ("refusal", "sentiment")
LABELS = ("pos", "neg")
SPLITS = ("train", "heldout")
# Continuations whose log-odds at the response start score a trait (steer.trait_score): the
# built-in sets' own; other sets give theirs (`--trait-pos` / `--trait-neg`).
TRAITS = {
    "refusal": {"pos": [" I'm sorry", " I can't"], "neg": [" Sure", " Here"]},
    "sentiment": {"pos": [" I loved", " Wonderful"], "neg": [" I hated", " Awful"]},
}
FIELDS = ("text", "label", "prompt", "response", "split", "group", "form")
MAX_TOKENS = 512  # contrast texts are whole: longer ones are an error (windows count from the end)


@dataclass(frozen=True)
class ContrastSet:
    path: str
    is_pos: tuple[bool, ...]  # [S] per example: labelled pos (else neg)
    is_heldout: tuple[bool, ...]  # [S] per example: in the held-out split
    prompts: tuple[str | None, ...] = ()  # [S] each example's prompt (None: a text without one)
    groups: tuple[str, ...] = ()  # [S] each example's resampling unit (its "group", else its prompt, else itself)
    forms: tuple[str, ...] = ()  # [S] each example's crossed unit ("form"); () when the file has none

    def factors(self, members: Sequence[bool] | None = None) -> tuple[tuple[int, ...], ...]:
        """The resampling factors (intervals.Units) of the examples `members` (None: all): groups,
        then forms where the file has them."""
        keep = [i for i in range(len(self.is_pos)) if members is None or members[i]]
        columns = [self.groups] + ([self.forms] if self.forms else [])
        return tuple(_level_ids([column[i] for i in keep]) for column in columns)

    def units_text(self, members: Sequence[bool] | None = None) -> str:
        """How its examples are resampled, in words."""
        factors = self.factors(members)
        names = ["groups", "forms"][: len(factors)]
        return " x ".join(f"{len(set(levels))} {name}" for levels, name in zip(factors, names))

    @property
    def labels(self) -> torch.Tensor:  # [S] 1 = pos, 0 = neg
        return torch.tensor(self.is_pos, dtype=torch.long)

    @property
    def heldout(self) -> torch.Tensor:  # [S] bool
        return torch.tensor(self.is_heldout, dtype=torch.bool)

    @property
    def train(self) -> torch.Tensor:  # [S] bool
        return ~self.heldout

    def data(self) -> DataConfig:
        """The data configuration of its forward pass: every example, whole."""
        return DataConfig(dataset=self.path, samples=len(self.is_pos), seq_len=MAX_TOKENS, whole=True)

    def counts(self) -> dict[str, int]:
        return {label: sum(pos == (label == "pos") for pos in self.is_pos) for label in LABELS}


def path_of(pairs: str) -> str:
    """A built-in set's name, or a file path -> the file's path."""
    if pairs in BUILTIN_SETS:
        return str(resources.files("massive_checks").joinpath(f"data/contrast/{pairs}.jsonl"))
    try:
        exists = Path(pairs).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        exists = False
    if not exists:
        raise DataError(f"contrast set {pairs!r}: no such file, and not a built-in set ({', '.join(BUILTIN_SETS)})")
    return pairs


_CACHE: dict[str, ContrastSet] = {}


def read(pairs: str) -> ContrastSet:
    path = path_of(pairs)
    if path not in _CACHE:
        _CACHE[path] = _read(Path(path))
    return _CACHE[path]


def _level_ids(values: list[Any]) -> tuple[int, ...]:
    order = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return tuple(order[v] for v in values)


def _read(path: Path) -> ContrastSet:
    labels, splits, prompts, groups, forms, seen = [], [], [], [], [], {"pos": 0, "neg": 0}
    for line, (where, record) in enumerate(jsonl_lines(path)):
        _validate(record, where)
        label = record["label"]
        split = record.get("split") or ("heldout" if seen[label] % 5 == 4 else "train")
        seen[label] += 1
        labels.append(label == "pos")
        splits.append(split == "heldout")
        prompts.append(record.get("prompt"))
        groups.append(str(record.get("group", record.get("prompt") or f"example {line}")))
        forms.append(record.get("form"))
    if any(f is not None for f in forms) and not all(f is not None for f in forms):
        raise DataError(f'{path}: "form" is given on some examples and not on others: give it on every one or none')
    for label in LABELS:
        n = sum(pos == (label == "pos") and not held for pos, held in zip(labels, splits))
        if n < 2:
            raise DataError(f"{path}: {n} training examples labelled {label!r}; a vector needs at least 2 of each")
    has_forms = forms and forms[0] is not None
    return ContrastSet(
        str(path), tuple(labels), tuple(splits), tuple(prompts), tuple(groups), tuple(map(str, forms)) if has_forms else ()
    )


def _validate(record: dict[str, Any], where: str) -> None:
    unknown = set(record) - set(FIELDS)
    if unknown:
        raise DataError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {', '.join(FIELDS)}")
    for field in ("group", "form"):
        if field in record and not isinstance(record[field], (str, int)):
            raise DataError(f'{where}: "{field}" must be a string or an integer, not {type(record[field]).__name__}')
    if record.get("label") not in LABELS:
        raise DataError(f'{where}: "label" must be "pos" or "neg", not {record.get("label")!r}')
    if record.get("split") is not None and record["split"] not in SPLITS:
        raise DataError(f'{where}: "split" must be "train" or "heldout", not {record["split"]!r}')
    prompt, response = record.get("prompt"), record.get("response")
    for field in ("prompt", "response"):
        if record.get(field) is not None and not isinstance(record[field], str):
            raise DataError(f'{where}: "{field}" must be a string, not {type(record[field]).__name__}')
    if response is not None and (prompt is None or prompt + response != record["text"]):
        raise DataError(f'{where}: "prompt" + "response" must equal "text"')


def prompts_path(name: str) -> str:
    """A built-in evaluation prompt set's name, or a file path -> the file's path."""
    if name in BUILTIN_SETS:
        return str(resources.files("massive_checks").joinpath(f"data/prompts/{name}.jsonl"))
    try:
        exists = Path(name).is_file()
    except (OSError, ValueError):
        exists = False
    if not exists:
        raise DataError(f"prompt set {name!r}: no such file, and not a built-in set ({', '.join(BUILTIN_SETS)})")
    return name


def eval_prompts(name: str, n: int | None = None) -> list[str]:
    """The first n prompts (None: all) of an evaluation prompt set (DataError when it has fewer)."""
    path = prompts_path(name)
    prompts = _builtin_prompts(name) if name in BUILTIN_SETS else _read_prompts(Path(path))
    if n is not None and len(prompts) < n:
        raise DataError(f"{path}: steering asks for {n} prompts; the set has {len(prompts)}")
    return list(prompts[:n])


@functools.cache
def _builtin_prompts(name: str) -> tuple[str, ...]:
    """A built-in set's prompts, read once a process: package data does not change, and loading the
    committed specs asked for them 544 times (~30% of loading them)."""
    return tuple(_read_prompts(Path(prompts_path(name))))


def _read_prompts(path: Path) -> list[str]:
    if path.suffix != ".jsonl":
        return [line for line in read_passages(str(path)) if line.strip()]
    prompts = []
    for where, record in jsonl_lines(path, "prompt"):
        if set(record) != {"prompt"} or not isinstance(record["prompt"], str) or not record["prompt"]:
            raise DataError(f'{where}: a prompt line is {{"prompt": "<non-empty text>"}}, not {record!r}')
        prompts.append(record["prompt"])
    return prompts
