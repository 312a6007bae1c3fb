"""`massive-checks` commands: JSON schemas and errors."""

from __future__ import annotations

import json

import pytest
import torch

from massive_checks import cli
from massive_checks.engine.synthetic import PLANT


def run_json(capsys, *argv):
    assert cli.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_profile_json_schema_and_planted_truth(capsys):
    doc = run_json(capsys, "profile", "planted-llama", "--samples", "4", "--seq-len", "32", "--json")
    assert doc["model"] == "planted-llama" and len(doc["layers"]) == 4
    for layer, row in enumerate(doc["layers"]):
        assert row["layer"] == layer and set(row) == {"layer", "top", "median", "ratio", "paper"}
        assert [set(t) for t in row["top"]] == [{"value", "dim", "token"}] * 3
        assert row["top"][0]["value"] >= row["top"][1]["value"] >= row["top"][2]["value"]
        assert row["ratio"] == pytest.approx(row["top"][0]["value"] / row["median"])
        paper = row["paper"]  # means over sequences: never above the max over sequences
        assert set(paper) == {"top", "median", "ratio"} and len(paper["top"]) == 3
        assert paper["top"][0] >= paper["top"][1] >= paper["top"][2] and paper["top"][0] <= row["top"][0]["value"]
        assert paper["median"] == row["median"] and paper["ratio"] == pytest.approx(paper["top"][0] / paper["median"])
    assert set(doc["statistics"]) == {"paper", "max_over_sequences", "cv_over_sequences"}
    assert {(m["layer"], m["dim"], m["token"]) for m in doc["massive"]} == {
        (layer, PLANT["dim"], PLANT["token"]) for layer in range(PLANT["layer"], 4)
    }
    assert all(set(m) == {"layer", "value", "dim", "token", "sequence"} for m in doc["massive"])


def test_profile_with_ablation_composes(capsys):
    doc = run_json(
        capsys,
        "profile",
        "planted-llama",
        "--samples",
        "4",
        "--json",
        "--ablate",
        f"mlp:{PLANT['layer']}",
        "--ablate",
        "heads:0.1",
    )
    assert doc["massive"] == []
    assert doc["intervention"] == f"heads@0[1] + mlp@{PLANT['layer']}"


def test_heads_json_equals_plain_transformers(capsys, load_model):
    doc = run_json(capsys, "heads", "tiny-gpt2", "--samples", "5", "--seq-len", "24", "--json")
    scores = [h["score"] for h in doc["heads"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3 * 4
    lm = load_model("tiny-gpt2")
    from massive_checks.engine.batches import tokenize
    from massive_checks.language.data import DataConfig

    batch = tokenize(lm.tokenizer, DataConfig(samples=5, seq_len=24))
    with torch.no_grad():
        out = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True)
    for head in doc["heads"]:
        probs = out.attentions[head["layer"]][:, head["head"]]  # [B, T, T]
        per_seq = [probs[b, 1 : int(n), 0].mean() for b, n in enumerate(batch.lengths)]
        assert head["score"] == pytest.approx(float(torch.stack(per_seq).mean()), rel=1e-5)


def test_unloadable_model_is_an_error_not_a_traceback(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["profile", "gpt2"]) == 2
    err = capsys.readouterr().err
    assert "model 'gpt2' could not be loaded" in err and "Traceback" not in err


def test_models_load_loads_each_model_and_says_what_loaded(capsys, monkeypatch):
    assert cli.main(["models", "--load", "tiny-llama", "--load", "planted-llama"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["tiny-llama", "planted-llama"]
    assert all("llama, revision synthetic-" in line and "float32 on cpu" in line for line in lines)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["models", "--load", "tiny-llama", "--load", "gpt2"]) == 2  # the set-up step fails, naming it
    assert "model 'gpt2' could not be loaded" in capsys.readouterr().err


def test_bad_ablation_is_an_error(capsys):
    assert cli.main(["profile", "tiny-llama", "--ablate", "attn:99"]) == 2
    assert "out of range for a model with 3 blocks" in capsys.readouterr().err
