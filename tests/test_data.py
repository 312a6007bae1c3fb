"""Built-in and user datasets."""

from __future__ import annotations

import json

import pytest

from massive_checks.base.errors import DataError
from massive_checks.engine.batches import tokenize
from massive_checks.language.data import BUILTIN_FILE, DataConfig, dataset_revision, read_passages


def test_builtin_text_has_256_varied_passages_across_registers(smollm2):
    """Enough passages for the sizes an inconclusive verdict suggests (~254), in five registers;
    the first 49 (the original set, which goldens were recorded on) each 50-300 tokens."""
    from collections import Counter
    from importlib import resources

    passages = read_passages("builtin")
    assert len(passages) >= 256 and len(set(passages)) == len(passages)
    lines = resources.files("massive_checks").joinpath(BUILTIN_FILE).read_text("utf-8").splitlines()
    registers = Counter(json.loads(line)["register"] for line in lines)
    assert set(registers) == {"prose", "dialogue", "code", "list", "numbers"} and min(registers.values()) >= 30, registers
    lengths = [len(smollm2.tokenizer(p)["input_ids"]) for p in passages]
    assert min(lengths) >= 20 and max(lengths) <= 300, (min(lengths), max(lengths))
    assert min(lengths[:49]) >= 50
    assert any("\n" in p for p in passages)  # code and lists keep their lines


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


def _hub_folder(tmp_path, rows):
    """A local dataset folder as the `datasets` library reads it: a test.jsonl split."""
    folder = tmp_path / "wiki"
    folder.mkdir()
    (folder / "test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    return folder


LONG = "word " * 25


def test_a_local_dataset_folder_reads_through_datasets(tmp_path, load_model):
    """hf:FOLDER:SPLIT: the rows of at least 20 words, in order (headings and blank lines left out),
    the same on every read; its revision is a hash of that text."""
    pytest.importorskip("datasets")
    rows = [" = A Heading = ", "", f"first {LONG}", "too short to count", f"second {LONG}", f"third {LONG}"]
    name = f"hf:{_hub_folder(tmp_path, rows)}:test"
    assert read_passages(name) == [f"first {LONG}".strip(), f"second {LONG}".strip(), f"third {LONG}".strip()]
    revision = dataset_revision(name)
    assert revision is not None and revision.startswith("local-")
    batch = tokenize(load_model("tiny-llama").tokenizer, DataConfig(dataset=name, samples=2, seq_len=16))
    assert batch.input_ids.shape == (2, 16)


@pytest.mark.parametrize(
    "name, message",
    [
        ("hf:just-a-name:test", "write hf:NAME/CONFIG"),
        ("hf:a/b/c/d:test", "write hf:NAME/CONFIG"),
        ("hf:no-such-org-here/no-such-dataset-here/default:test", "could not be loaded"),
    ],
)
def test_a_hub_dataset_that_cannot_be_read_is_an_error_naming_it(monkeypatch, name, message):
    datasets = pytest.importorskip("datasets")
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    # No waiting on a hub that is not reachable (~20 s of retries): the libraries read these
    # variables once, at import, so a process that imported them already needs the flags set.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=message) as error:
        read_passages(name)
    assert name in str(error.value)


def test_without_the_datasets_library_the_error_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets raises ImportError
    with pytest.raises(DataError, match=r"pip install 'massive_checks\[hf\]'"):
        read_passages("hf:wikitext/wikitext-2-raw-v1:nothing-cached")


def test_a_hub_datasets_revision_is_in_results_and_goldens(tmp_path):
    pytest.importorskip("datasets")
    from massive_checks.language import load_file
    from massive_checks.output import results
    from massive_checks.pipeline.suite import Options, Suite

    name = f"hf:{_hub_folder(tmp_path, [f'{i} {LONG}' for i in range(4)])}:test"
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text("id: s\nclaim: c\ngolden: true\nchecks:\n  - {measure: top1, at_least: 1}\n")
    (spec,) = load_file(spec_file)
    suite = Suite(Options(models=["planted-llama"], root=tmp_path, dataset=name, samples=4, seq_len=32, resamples=200))
    suite.plan(spec, "planted-llama")
    run = suite.run(spec, "planted-llama")
    revision = dataset_revision(name)
    assert run.record["data"]["revision"] == revision and run.record["data"]["dataset"] == name
    assert json.loads(run.golden.path.read_text())["meta"]["data"]["revision"] == revision
    assert results.outcome_record(run.observation, run.verdict)["data"]["revision"] == revision
