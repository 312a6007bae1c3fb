"""Built-in and user datasets."""

from __future__ import annotations

import json

import pytest

from massive_checks.base.errors import DataError
from massive_checks.engine.batches import tokenize
from massive_checks.language.data import DataConfig, read_passages


def test_builtin_text_has_forty_varied_passages_of_50_to_300_tokens(smollm2):
    passages = read_passages("builtin")
    assert len(passages) >= 40 and len(set(passages)) == len(passages)
    lengths = [len(smollm2.tokenizer(p)["input_ids"]) for p in passages]
    assert min(lengths) >= 50 and max(lengths) <= 300, (min(lengths), max(lengths))


def test_txt_and_jsonl_datasets(tmp_path, load_model):
    txt = tmp_path / "d.txt"
    txt.write_text("first passage\n\nsecond passage\n")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps({"text": "first passage"}) + "\n" + json.dumps({"text": "second passage"}) + "\n")
    assert read_passages(str(txt)) == read_passages(str(jsonl)) == ["first passage", "second passage"]
    tokenizer = load_model("tiny-llama").tokenizer
    a = tokenize(tokenizer, DataConfig(dataset=str(txt), samples=2, seq_len=8))
    b = tokenize(tokenizer, DataConfig(dataset=str(jsonl), samples=2, seq_len=8))
    assert a.ids_hash == b.ids_hash and a.input_ids.shape == (2, 8)
    assert a.attention_mask.sum(1).tolist() == [8, 8]


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        ('{"txt": 1}\n', ".jsonl", 'needs a string field "text"'),
        ("not json\n", ".jsonl", "d.jsonl:1: not valid JSON"),
        ("a,b\n", ".csv", "expected a .txt"),
    ],
)
def test_bad_dataset_files_are_clear_errors(tmp_path, content, suffix, message):
    path = tmp_path / f"d{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_passages(str(path))


def test_too_few_passages_is_an_error(tmp_path, load_model):
    path = tmp_path / "d.txt"
    path.write_text("only one\n")
    with pytest.raises(DataError, match="has 1 passages, 4 requested"):
        tokenize(load_model("tiny-llama").tokenizer, DataConfig(dataset=str(path), samples=4))
