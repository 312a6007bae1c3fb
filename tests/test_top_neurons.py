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
    """[S, F] per sequence, activation x weight per unit at its real token where the MLP output's
    `DIM` (less bias) peaks: the down projection's input captured by a hook of its own, one
    unpadded sequence at a time."""
    batch = session.batch(SMALL_DATA)
    down = hooks.resolve(lm, hooks.site(LAYER, "mlp.out"))[0]
    weight = down.weight.detach()
    w = weight[:, DIM] if column else weight[DIM, :]  # Conv1D [in, out]; Linear [out, in]
    rows = []
    for ids, mask in zip(batch.input_ids, batch.attention_mask):
        seen = []
        handle = down.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()[0]))
        try:
            with torch.no_grad():
                lm.model(input_ids=ids[mask.bool()][None])
        finally:
            handle.remove()
        act = seen[0]  # [T, F]
        rows.append(act[(act @ w).abs().argmax()] * w)
    return torch.stack(rows)


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
    per_sequence = by_hand(lm, session, column)  # [S, F]
    right = per_sequence.mean(dim=0)
    units = observed(tmp_path, session, "top_neurons")
    assert units == right.abs().argsort(descending=True)[:K].tolist()
    share = observed(tmp_path, session, "top_neurons_share")
    assert share.value == pytest.approx(float(right[units].sum() / right.sum()), rel=1e-5)
    # Resampled by sequence, each resample with its own top K: resample 0 by hand.
    view = session.view(SMALL_DATA)
    counts = torch.from_numpy(view.bootstrap.weights(view.units())[0]).float()  # [S]
    resampled = counts @ per_sequence / len(counts)  # [F]
    top = resampled.abs().argsort(descending=True)[:K]
    assert share.replicates[0] == pytest.approx(float(resampled[top].sum() / resampled.sum()), rel=1e-5)
    low, high = share.interval(0.95)
    assert low <= share.value <= high and high > low


def test_the_seeds_row_reading_gives_another_answer_on_conv1d(tmp_path, session_for):
    """The seed read c_proj.weight[447, :] on GPT-2: the outgoing weights of unit 447, not the
    units feeding dim 447. On a Conv1D model the two readings rank different units."""
    session = session_for("tiny-gpt2")
    weight = hooks.resolve(session.lm, hooks.site(LAYER, "mlp.out"))[0].weight.detach()  # [F, D]
    seed_reading = weight[DIM, :].abs().argsort(descending=True)[:K].tolist()  # indexes D outputs
    units = observed(tmp_path, session, "top_neurons")
    assert weight.shape[1] == session.lm.width and weight.shape[0] > session.lm.width  # [F, D]
    assert units != seed_reading


def test_the_planted_neuron_is_the_top_unit_and_writes_the_planted_dim(tmp_path, session_for):
    """planted-llama wires unit PLANT['neuron'] of block PLANT['layer'] to fire on <s> and write
    only into PLANT['dim'] (down_proj.weight[dim, neuron] = 1): exact ground truth for the
    per-sequence contributions at each sequence's peak token."""
    from massive_checks.engine.synthetic import PLANT

    session = session_for("planted-llama")
    view = session.view(SMALL_DATA)
    per_sequence = view.contributions(PLANT["layer"], PLANT["dim"])  # [S, F]
    assert per_sequence.abs().argmax(dim=1).tolist() == [PLANT["neuron"]] * len(per_sequence)
    path = tmp_path / "spec.yaml"
    path.write_text(
        f"id: planted\nclaim: c\nchecks:\n"
        f"  - {{measure: top_neurons, layer: {PLANT['layer']}, dim: {PLANT['dim']}, k: 1, equals: [{PLANT['neuron']}]}}\n"
        f"  - {{measure: top_neurons_share, layer: {PLANT['layer']}, dim: {PLANT['dim']}, k: 1, at_least: 0.99}}\n"
    )
    (spec,) = load_file(path)
    units, share = Evaluator(spec, session, SMALL_DATA).evaluate().checks
    assert units.verdict == "holds" and share.verdict == "holds"
    # From the other side: the planted unit writes more than half of the dim, so at_most 0.5 fails.
    path.write_text(path.read_text().replace("at_least: 0.99", "at_most: 0.5"))
    (spec,) = load_file(path)
    assert Evaluator(spec, session, SMALL_DATA).evaluate().checks[1].verdict == "contradicted"
