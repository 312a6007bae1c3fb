"""top_neurons reads the right weight axis (claim C10): GPT-2's Conv1D c_proj weight is
[in = intermediate units, out = residual dims], so the weights producing dim d are weight[:, d];
Llama's Linear down_proj weight is [out, in], so they are weight[d, :]."""

from __future__ import annotations

import textwrap

import pytest
import torch

from conftest import SMALL_DATA
from massive_checks.engine import hooks
from massive_checks.language import load_file
from massive_checks.pipeline.evaluate import Evaluator

DIM, LAYER, K = 3, 1, 5


def by_hand(lm, session, column: bool) -> torch.Tensor:
    """activation x weight per unit, at the token where the MLP output's `DIM` peaks."""
    view = session.view(SMALL_DATA)
    token = int(view.stats(hooks.site(LAYER, "mlp.out")).cell_max[:, DIM].argmax())
    activation = view.stats(hooks.site(LAYER, "mlp.down_in")).mean()[token]  # [F] mean over sequences
    weight = hooks.resolve(lm, hooks.site(LAYER, "mlp.out"))[0].weight.detach()
    return activation * (weight[:, DIM] if column else weight[DIM, :])


def observed(tmp_path, session, measure: str, k: int = K):
    path = tmp_path / "spec.yaml"
    path.write_text(
        textwrap.dedent(f"""
        id: units
        claim: c
        checks:
          - {{measure: {measure}, layer: {LAYER}, dim: {DIM}, k: {k}, {"equals: [0]" if measure == "top_neurons" else "at_least: 0"}}}
    """)
    )
    (spec,) = load_file(path)
    return Evaluator(spec, session, SMALL_DATA).evaluate().checks[0].rows[0].observed


@pytest.mark.parametrize("name, column", [("tiny-gpt2", True), ("tiny-llama", False)])
def test_top_neurons_use_the_weights_that_produce_the_dim(tmp_path, session_for, name, column):
    session = session_for(name)
    lm = session.lm
    assert lm.adapter.conv1d == column
    right = by_hand(lm, session, column)
    units = observed(tmp_path, session, "top_neurons")
    assert units == right.abs().argsort(descending=True)[:K].tolist()
    share = observed(tmp_path, session, "top_neurons_share")
    assert share.value == pytest.approx(float(right[units].sum() / right.sum()), rel=1e-5)


def test_the_seeds_row_reading_gives_another_answer_on_conv1d(tmp_path, session_for):
    """The seed read c_proj.weight[447, :] on GPT-2: the outgoing weights of unit 447, not the
    units feeding dim 447. On a Conv1D model the two readings rank different units."""
    session = session_for("tiny-gpt2")
    weight = hooks.resolve(session.lm, hooks.site(LAYER, "mlp.out"))[0].weight.detach()  # [F, D]
    seed_reading = weight[DIM, :].abs().argsort(descending=True)[:K].tolist()  # indexes D outputs
    units = observed(tmp_path, session, "top_neurons")
    assert weight.shape[1] == session.lm.width and weight.shape[0] > session.lm.width  # [F, D]
    assert units != seed_reading
