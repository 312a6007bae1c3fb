"""The planted model is exact ground truth: detection and ablation must find what was planted."""

from __future__ import annotations

import pytest

from conftest import SMALL_DATA
from massive_checks.engine import readings, stats
from massive_checks.engine.synthetic import PLANT
from massive_checks.language import interventions
from massive_checks.measures import massive as M
from massive_checks.measures import profile as P


def test_planted_dim_layer_and_token_are_found_exactly(session_for):
    view = session_for("planted-llama").view(SMALL_DATA)
    layers = list(range(view.lm.n_layers))
    emergence = M.EmergenceLayer().compute(view, layers)
    assert emergence.value == PLANT["layer"] and emergence.interval(0.95) == (PLANT["layer"], PLANT["layer"])
    positions = M.MassivePositions().compute(view, layers)  # the planted token in each sequence, nowhere else
    assert positions.value == SMALL_DATA.samples and positions.interval(0.95) is None  # a count of cases: exact
    assert M.MassivePositions().compute(view, layers[: PLANT["layer"]]).value == 0
    assert M.MassiveDims().compute(view, layers).shares == {PLANT["dim"]: 1.0}
    for layer in layers:
        cells = readings.massive_examples(view, layer)[0]
        if layer < PLANT["layer"]:
            assert cells == []
        else:
            assert {(c.dim, c.token) for c in cells} == {(PLANT["dim"], PLANT["token"])}
            assert P.top_cells(view, layer, 1)[0].value > 500


def test_massive_threshold_parameters_are_respected(session_for):
    session = session_for("planted-llama")
    layer = PLANT["layer"]
    value = P.top_cells(session.view(SMALL_DATA), layer, 1)[0].value
    assert readings.massive_examples(session.view(SMALL_DATA, massive=(value * 1.01, 1.0)), layer)[0] == []  # above every |a|
    assert readings.massive_examples(session.view(SMALL_DATA, massive=(value * 0.99, 1.0)), layer)[0] != []
    stats = session.view(SMALL_DATA).block(layer)  # the ratio is per sequence: its own median
    ratios = stats.top()[0] / stats.median()
    highest = float(ratios.max())
    assert readings.massive_examples(session.view(SMALL_DATA, massive=(1.0, highest * 1.01)), layer)[0] == []
    assert readings.massive_dims(session.view(SMALL_DATA, massive=(1.0, highest * 1.01)), layer) == set()
    hits = readings.massive_examples(session.view(SMALL_DATA, massive=(1.0, highest * 0.99)), layer)[0]
    assert {c.sequence for c in hits} == {int(ratios.argmax())} | {
        s for s, r in enumerate(ratios.tolist()) if r >= highest * 0.99
    }


def test_the_massive_rule_is_strict_on_value_and_inclusive_on_ratio():
    """|a| > min_value and |a| >= min_ratio x median, as the README and specs/README state."""
    assert not stats.is_massive(100.0, 0.01, 100.0, 1000.0)  # at the value floor: not massive
    assert stats.is_massive(100.5, 0.01, 100.0, 1000.0)
    assert stats.is_massive(2000.0, 2.0, 100.0, 1000.0)  # exactly 1000x the median: massive
    assert not stats.is_massive(1999.0, 2.0, 100.0, 1000.0)


def _ablated(session, text):
    return session.view(SMALL_DATA, session.resolve(SMALL_DATA, [interventions.parse(text)]))


def test_ablating_the_planted_mlp_removes_the_massive_activation(session_for):
    session = session_for("planted-llama")
    view = _ablated(session, f"mlp:{PLANT['layer']}")
    assert all(readings.massive_examples(view, layer)[0] == [] for layer in range(view.lm.n_layers))
    assert float(view.block(PLANT["layer"]).cell_max[:, PLANT["dim"]].max()) < 5


def test_ablating_attention_keeps_the_massive_activation(session_for):
    session = session_for("planted-llama")
    baseline = P.top_cells(session.view(SMALL_DATA), PLANT["layer"], 1)[0]
    view = _ablated(session, "attn:all")
    top = P.top_cells(view, PLANT["layer"], 1)[0]
    assert (top.dim, top.token) == (PLANT["dim"], PLANT["token"])
    assert abs(top.value - baseline.value) / baseline.value < 0.2


def test_zeroing_the_planted_dim_at_its_token_removes_it_downstream(session_for):
    session = session_for("planted-llama")
    view = _ablated(session, f"dims:{PLANT['dim']}@{PLANT['layer']}#{PLANT['token']}")
    for layer in range(PLANT["layer"], view.lm.n_layers):
        assert float(view.block(layer).cell_max[PLANT["token"], PLANT["dim"]]) < 5


def test_float16_overflow_is_a_clear_error(load_model):
    import torch

    from massive_checks.base.errors import ActivationOverflow
    from massive_checks.engine import models
    from massive_checks.engine.session import ModelSession

    lm = models.load("planted-llama", dtype="float16")
    with torch.no_grad():  # grow the planted value (~908) past float16's 65504
        lm.model.model.layers[PLANT["layer"]].mlp.down_proj.weight.mul_(100)
    view = ModelSession(lm).view(SMALL_DATA)
    with pytest.raises(ActivationOverflow, match="float16 overflows at 65504"):
        P.top_cells(view, PLANT["layer"], 1)
