"""The field's measures against exact ground truth: the planted model's sink head, massive dim and
outlier dim, and references computed the plain-transformers way (output_attentions,
output_hidden_states), never through this package's captures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SMALL_DATA
from massive_checks.engine import readings
from massive_checks.engine.batches import tokenize
from massive_checks.engine.synthetic import PLANT, SINK
from massive_checks.language.data import DataConfig
from massive_checks.language.intervals import value_of
from massive_checks.measures.attention import AttentionTo, ValueNorm
from massive_checks.measures.norms import ResidualNorm
from massive_checks.measures.outliers import OutlierDims
from massive_checks.measures.profile import Top1

DATA = DataConfig(samples=6, seq_len=160)  # bytes: long enough for most passages to hold a delimiter


@pytest.fixture(scope="module")
def reference(load_model):
    """planted-llama on DATA: its batch, attentions [L] x [S, H, T, T] and hidden states
    [L + 1] x [S, T, D] (entry 0: the embeddings; no final norm on the last: it is not read)."""
    lm = load_model("planted-llama")
    batch = tokenize(lm.tokenizer, DATA)
    with torch.no_grad():
        out = lm.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True, output_hidden_states=True
        )
    return lm, batch, out.attentions, out.hidden_states


def _view(session_for):
    return session_for("planted-llama").view(DATA)


def test_attention_to_is_the_mean_over_heads_and_later_queries(session_for, reference):
    lm, batch, attentions, _ = reference
    view = _view(session_for)
    layers = list(range(lm.n_layers))
    delimiters = readings.first_delimiters(view)
    assert bool((delimiters > 0).any())
    for to, keys in (("first", torch.zeros_like(delimiters)), ("delimiter", delimiters)):
        measured = AttentionTo(to=to).compute(view, layers)
        for layer in layers:
            per_sequence = []
            for s, key in enumerate(keys.tolist()):
                real = int(batch.attention_mask[s].sum())
                if key < 0 or key >= real - 1:
                    continue  # no delimiter, or no query after it: left out
                per_sequence.append(float(attentions[layer][s, :, key + 1 : real, key].mean()))
            assert value_of(measured[layer]) == pytest.approx(np.mean(per_sequence), rel=1e-5), (to, layer)


def test_the_planted_sink_head_is_found(session_for):
    view = _view(session_for)
    table = readings.head_score_table(view)
    assert float(table[SINK["layer"], SINK["head"]]) > 0.99
    assert float(table.flatten().topk(2).values[1]) < 0.2  # no other head is a sink
    measured = AttentionTo().compute(view, list(range(view.lm.n_layers)))
    sink = measured[SINK["layer"]]
    assert max(measured, key=lambda L: value_of(measured[L])) == SINK["layer"]
    low, high = sink.interval(0.95)
    assert low > 0.25  # one head of 4 at ~1: the block's mean is above a quarter


def test_residual_norm_is_the_block_outputs_l2_norm(session_for, reference):
    lm, batch, _, hidden = reference
    view = _view(session_for)
    mask = batch.attention_mask.bool()
    for tokens in ("rest", "first", "every"):
        chosen = mask.clone()
        if tokens == "rest":
            chosen[:, 0] = False
        elif tokens == "first":
            chosen[:, 1:] = False
        measured = ResidualNorm(tokens=tokens).compute(view, list(range(lm.n_layers - 1)))
        for layer, value in measured.items():
            norms = hidden[layer + 1].norm(dim=-1)  # [S, T]
            expected = ((norms * chosen).sum(dim=1) / chosen.sum(dim=1)).mean()
            assert value_of(value) == pytest.approx(float(expected), rel=1e-5), (tokens, layer)
    massive = ResidualNorm(tokens="first").compute(view, [PLANT["layer"]])[PLANT["layer"]]
    rest = ResidualNorm().compute(view, [PLANT["layer"]])[PLANT["layer"]]
    assert value_of(massive) > 100 * value_of(rest)  # the planted ~1e3 sits at position 0


def test_value_norm_reads_the_value_vectors_at_the_first_token(session_for, reference):
    lm, batch, _, hidden = reference
    view = _view(session_for)
    mask = batch.attention_mask.bool()
    for layer in range(lm.n_layers):
        attention = lm.model.model.layers[layer]
        with torch.no_grad():
            values = attention.self_attn.v_proj(attention.input_layernorm(hidden[layer]))  # [S, T, Hkv * hd]
        norms = values.unflatten(-1, (-1, lm.head_dim)).norm(dim=-1).mean(dim=-1)  # [S, T]
        others = mask.clone()
        others[:, 0] = False
        expected = (norms[:, 0] / ((norms * others).sum(dim=1) / others.sum(dim=1))).mean()
        measured = ValueNorm().compute(view, [layer])[layer]
        assert value_of(measured) == pytest.approx(float(expected), rel=1e-4), layer


def test_outlier_dims_find_the_planted_dim_and_fail_from_each_side(session_for):
    view = _view(session_for)
    layers = list(range(view.lm.n_layers))  # the plant holds from block 1 on: 3 of 4 blocks
    token_share = 1 / int(view.batch.lengths.max())  # one position per sequence, at least this share
    found = OutlierDims(min_value=100.0, min_layer_share=0.75, min_token_share=token_share / 2, site="out")
    assert found.compute(view, layers) == {PLANT["dim"]}
    assert found.compute(view, layers).shares == {PLANT["dim"]: 1.0}
    for too_strict in (
        {"min_value": 1e5, "min_layer_share": 0.75, "min_token_share": token_share / 2},  # no value that large
        {"min_value": 100.0, "min_layer_share": 0.8, "min_token_share": token_share / 2},  # in 3 blocks of 4 only
        {"min_value": 100.0, "min_layer_share": 0.75, "min_token_share": 0.5},  # on one token per sequence only
    ):
        assert OutlierDims(site="out", **too_strict).compute(view, layers) == set()


def test_cv_over_sequences_is_std_over_mean_with_an_interval(session_for, reference):
    lm, batch, _, hidden = reference
    view = _view(session_for)
    rest = batch.attention_mask.bool().clone()
    rest[:, 0] = False
    for layer in range(lm.n_layers - 1):
        per_sequence = ((hidden[layer + 1].norm(dim=-1) * rest).sum(dim=1) / rest.sum(dim=1)).double().numpy()
        measured = ResidualNorm(statistic="cv_over_sequences").compute(view, [layer])[layer]
        assert measured.value == pytest.approx(np.std(per_sequence, ddof=1) / np.mean(per_sequence), rel=1e-5)
        low, high = measured.interval(0.95)
        assert low <= measured.value <= high and high > low
    top1 = Top1(statistic="cv_over_sequences").compute(view, [PLANT["layer"]])[PLANT["layer"]]
    assert top1.value == pytest.approx(0.0, abs=1e-6)  # <s>'s planted value is the same in every sequence


def test_count_makes_a_set_a_number(tmp_path):
    from massive_checks.base.errors import SpecError
    from massive_checks.language import load_file

    path = tmp_path / "count.yaml"
    path.write_text("id: c\nclaim: x\nchecks:\n  - {measure: massive_dims, layers: all, count: true, at_most: 1}\n")
    measure = load_file(path)[0].checks[0].quantity.measure
    assert (measure.shape, measure.numeric, measure.counted({3, 5})) == ("value", True, 2)
    for bad, message in (("count: true, contains: [1]", "count: true makes it a number"), ("at_most: 1", "write count: true")):
        path.write_text(f"id: c\nclaim: x\nchecks:\n  - {{measure: massive_dims, layers: all, {bad}}}\n")
        with pytest.raises(SpecError, match=message):
            load_file(path)


@pytest.mark.parametrize(("name", "adds_bos"), [("planted-llama", True), ("tiny-gpt2", False)])
def test_data_bos_adds_or_drops_the_start_token_whatever_the_default(load_model, name, adds_bos):
    lm = load_model(name)
    bos = lm.tokenizer.bos_token_id
    default = tokenize(lm.tokenizer, SMALL_DATA)
    assert bool((default.input_ids[:, 0] == bos).all()) == adds_bos
    with_bos = tokenize(lm.tokenizer, DataConfig(samples=6, seq_len=40, bos=True))
    without = tokenize(lm.tokenizer, DataConfig(samples=6, seq_len=40, bos=False))
    assert bool((with_bos.input_ids[:, 0] == bos).all()) and not bool((without.input_ids[:, 0] == bos).any())
    assert with_bos.ids_hash != without.ids_hash


def test_bos_true_without_a_bos_token_is_a_clear_error():
    from massive_checks.base.errors import DataError
    from massive_checks.engine.synthetic import byte_tokenizer

    tokenizer = byte_tokenizer(add_bos=False)
    tokenizer.bos_token = None
    assert tokenizer.bos_token_id is None
    with pytest.raises(DataError, match="has no bos_token"):
        tokenize(tokenizer, DataConfig(samples=2, seq_len=10, bos=True))
