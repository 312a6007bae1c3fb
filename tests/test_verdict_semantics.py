"""Verdicts whose stated confidence is their real one (issue 39): a check over many rows decided on
one simultaneous band, folded reductions without folding bias, claims of "every" and "some"
decided exactly by their cases, and interventions that change nothing reported as such."""

from __future__ import annotations

import numpy as np
import pytest

from massive_checks.engine.synthetic import PLANT
from massive_checks.language import intervals, load_file
from massive_checks.language.data import DataConfig
from massive_checks.language.intervals import CONTRADICTED, HOLDS, INCONCLUSIVE, Bootstrap, Units
from massive_checks.measures import massive as M
from massive_checks.pipeline.evaluate import Evaluator

ROWS, UNITS, DATASETS = 30, 40, 200


def _rows_at_bound(rng, draw: int, boot: Bootstrap) -> list[intervals.Estimate]:
    """30 per-block means on the same 40 sequences (correlated within a sequence), each with a
    true mean of exactly 0: the claim 'every block's mean is >= 0' is true, at its bound."""
    shared = rng.normal(0.0, 1.0, size=(UNITS, 1))  # a sequence's effect, common to its blocks
    x = 0.5 * shared + rng.normal(0.0, 1.0, size=(UNITS, ROWS))  # [n, rows]
    units = Units(f"draw {draw}", UNITS, "sequences")
    return [boot.mean(x[:, r], units) for r in range(ROWS)]


def test_a_true_claim_at_its_bound_over_30_rows_is_falsely_contradicted_at_most_at_the_stated_level():
    """Simulation: 200 data sets, 30 rows each of a true claim at its bound. Decided on the
    simultaneous band, the check is contradicted in at most ~5% of them (the stated level, plus
    Monte Carlo error); decided row by row on pointwise intervals, in far more."""
    rng, boot = np.random.default_rng(3), Bootstrap(resamples=1000)
    band_false = pointwise_false = 0
    for draw in range(DATASETS):
        rows = _rows_at_bound(rng, draw, boot)
        band = intervals.simultaneous(rows, 0.95)
        band_false += any(high < 0.0 for _, high in band)
        pointwise_false += any(r.interval(0.95)[1] < 0.0 for r in rows)
    assert band_false / DATASETS <= 0.08, band_false
    assert pointwise_false / DATASETS >= 0.2, pointwise_false  # what the per-row intervals did before


def test_the_band_widens_with_rows_and_is_the_pointwise_interval_for_one_row():
    rng, boot = np.random.default_rng(5), Bootstrap(resamples=1000)
    rows = _rows_at_bound(rng, 0, boot)
    (one,) = intervals.simultaneous(rows[:1], 0.95)
    assert one == pytest.approx(rows[0].interval(0.95))
    band = intervals.simultaneous(rows, 0.95)
    for (low, high), row in zip(band, rows):
        pointwise = row.interval(0.95)
        assert low < pointwise[0] and high > pointwise[1]


def test_folded_means_over_rows_carry_no_folding_bias():
    """30 rows whose true signed change is 0 everywhere: mean_abs's interval starts at 0, so
    'mean |change| >= 0.05' is never decided to hold; folding every resample (the old way) pushed
    the noise up and held it in most data sets."""
    rng, boot = np.random.default_rng(7), Bootstrap(resamples=1000)
    new_held = old_held = 0
    bound = 0.05
    for draw in range(60):
        rows = _rows_at_bound(rng, draw, boot)
        folded = intervals.reduce("mean_abs", rows)
        assert folded.derived == "mean_abs"
        new_held += folded.interval(0.95)[0] >= bound
        old = intervals.combine(lambda *v: np.mean(np.abs(np.stack(v)), axis=0), *rows)
        old_held += old.interval(0.95)[0] >= bound
    assert new_held == 0 and old_held >= 30, (new_held, old_held)


def test_a_folded_maximum_decides_from_both_sides():
    """max_abs of rows far from 0 is contradicted by `at_most` below them and holds `at_most`
    above their band; a compare of two folded means combines their intervals."""
    boot, units = Bootstrap(resamples=500), Units("u", 20, "sequences")
    rng = np.random.default_rng(1)
    rows = [boot.mean(rng.normal(mu, 0.1, size=20), units) for mu in (1.0, -2.0, 0.5)]
    folded = intervals.reduce("max_abs", rows)
    low, high = folded.interval(0.95)
    assert folded.value == pytest.approx(abs(rows[1].value)) and 1.8 < low < 2.0 < high < 2.2
    assert intervals.decide(_bound("at_most", 1.5), low, high) == CONTRADICTED
    assert intervals.decide(_bound("at_most", 2.5), low, high) == HOLDS
    small = intervals.reduce("mean_abs", rows[2:])
    ratio = intervals.derived_compare("ratio", folded, small)
    r_low, r_high = ratio.interval(0.95)
    assert r_low < ratio.value < r_high and r_low > 3.0
    with pytest.raises(TypeError, match="combines only in a compare"):
        intervals.ratio(folded, small)


def _bound(kind, value):
    from massive_checks.language import Bound

    return Bound(kind, value)


# --------------------------------------------------------------------------- cases, exactly


def _spec(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    (spec,) = load_file(path)
    return spec


def test_every_is_contradicted_by_one_counterexample_named_by_sequence_block_and_token(tmp_path, session_for):
    """planted-llama's MLP fires on <s>: a passage with <s> in its middle holds a massive
    activation there, neither its first token nor its first delimiter. That one case contradicts
    'every massive activation sits on the first token or a delimiter', named exactly."""
    passages = tmp_path / "p.txt"
    passages.write_text("plain words without any stop\nwords then <s> again and more words\nanother plain line here\n")
    data = DataConfig(dataset=str(passages), samples=3, seq_len=40)
    session = session_for("planted-llama")
    spec = _spec(tmp_path, "id: x\nclaim: c\nchecks:\n  - {measure: massive_elsewhere, at_most: 0}\n")
    result = Evaluator(spec, session, data).evaluate()
    row = result.checks[0].rows[0]
    assert result.verdict.outcome == CONTRADICTED and row.interval is None
    token = session.batch(data).input_ids[1].tolist().index(256, 1)  # the mid-sequence <s>
    layers = f"{PLANT['layer']}-3"
    assert f"sequence 1 token {token} ('<s>') in blocks {layers}" in row.note, row.note
    assert "exact: 1 position counted over 3 sequences" in row.note


def test_none_found_holds_on_this_data_and_says_over_how_many(tmp_path, session_for):
    from conftest import SMALL_DATA

    session = session_for("planted-llama")
    spec = _spec(tmp_path, "id: x\nclaim: c\nchecks:\n  - {measure: massive_elsewhere, at_most: 0}\n")
    row = Evaluator(spec, session, SMALL_DATA).evaluate().checks[0].rows[0]
    assert row.verdict == HOLDS and row.observed.value == 0
    assert "exact: 0 positions counted over 6 sequences, blocks 0-3" in row.note


def test_some_is_shown_by_one_example_and_a_count_has_no_interval(session_for):
    from conftest import SMALL_DATA

    view = session_for("planted-llama").view(SMALL_DATA)
    found = M.MassivePositions().compute(view, list(range(4)))
    assert found.value == 6 and found.replicates is None  # <s> of each sequence, in blocks 1-3
    assert len(found.witnesses) == M.WITNESSES and found.witnesses[0].startswith("sequence 0 token 0")
    assert intervals.decide(_bound("at_least", 1), found.value, found.value) == HOLDS
    none = M.MassivePositions().compute(view, [0])
    assert none.value == 0 and intervals.decide(_bound("at_least", 1), 0, 0) == CONTRADICTED


# --------------------------------------------------------------------------- vacuous interventions


def test_an_intervention_that_changes_nothing_makes_its_checks_inconclusive(tmp_path, session_for):
    """planted-llama's massive cell has the same value in every sequence (it keys on <s>), so
    'set it to its mean' is an identity: the check reading it is inconclusive and says why, while
    zeroing it (a real change) is decided."""
    from conftest import SMALL_DATA

    session = session_for("planted-llama")
    dims = f"dims:{PLANT['dim']}@{PLANT['layer']}#massive"
    spec = _spec(
        tmp_path,
        f'id: x\nclaim: c\ninterventions:\n  zeroed: ["{dims}"]\n  mean_set: ["{dims}=mean"]\n'
        "checks:\n  - {measure: top1, layers: 1, change: [baseline, zeroed], at_most: -0.5}\n"
        "  - {measure: loss, change: [baseline, mean_set], between: [-0.01, 0.01]}\n",
    )
    result = Evaluator(spec, session, SMALL_DATA).evaluate()
    zeroed, mean_set = result.checks
    assert zeroed.verdict == HOLDS
    assert mean_set.verdict == INCONCLUSIVE
    assert "the intervention is an identity on planted-llama: mean_set" in mean_set.rows[0].note
    assert list(result.observation.identities) == ["mean_set"]


# --------------------------------------------------------------------------- the units of contrast sets


def _crossed_data(rng, prompts: int = 80, forms: int = 16) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    """One value per (prompt, pos or neg response): prompt effects, response-form effects (each
    form written into 5 prompts per label, as in the built-in sets) and noise; true mean 0."""
    prompt_effect = rng.normal(0.0, 0.5, size=prompts)
    form_effect = rng.normal(0.0, 1.0, size=2 * forms)  # pos forms 0-15, neg forms 16-31
    rows, groups, form_ids = [], [], []
    for p in range(prompts):
        for label in (0, 1):
            form = label * forms + (p * 3 + label) % forms
            rows.append(prompt_effect[p] + form_effect[form] + rng.normal(0.0, 0.3))
            groups.append(p)
            form_ids.append(form)
    return np.array(rows), (tuple(groups), tuple(form_ids))


def test_clustered_contrast_intervals_cover_at_the_stated_level_and_per_example_ones_did_not():
    """Simulation with a known cluster structure (prompts crossed with response forms): the
    two-way bootstrap (groups x forms) covers the true mean in >= 90% of 300 data sets at 95%;
    resampling example by example, as before, covers it in far fewer."""
    rng, boot = np.random.default_rng(17), Bootstrap(resamples=500)
    two_way = per_example = 0
    sets = 300
    for draw in range(sets):
        x, factors = _crossed_data(rng)
        low, high = boot.mean(x, Units(f"c{draw}", len(x), "contrast examples", factors)).interval(0.95)
        two_way += low <= 0.0 <= high
        low, high = boot.mean(x, Units(f"e{draw}", len(x), "contrast examples")).interval(0.95)
        per_example += low <= 0.0 <= high
    assert two_way / sets >= 0.90, two_way
    assert per_example / sets <= 0.70, per_example


def test_a_prompts_pos_and_neg_are_resampled_together():
    boot = Bootstrap(resamples=200)
    units = Units("pairs", 6, "contrast examples", ((0, 0, 1, 1, 2, 2),))
    w = boot.weights(units)
    assert np.array_equal(w[:, 0], w[:, 1]) and np.array_equal(w[:, 4], w[:, 5])
    assert np.all(w.sum(axis=1) == 6)


def test_built_in_contrast_sets_name_their_units_and_hold_out_unseen_forms():
    from massive_checks.language import contrast

    for name in contrast.BUILTIN_SETS:
        labels = contrast.read(name)
        groups, forms = labels.factors()
        assert len(set(groups)) == 100 and len(set(forms)) == 40
        train_forms = {f for f, held in zip(labels.forms, labels.is_heldout) if not held}
        held_forms = {f for f, held in zip(labels.forms, labels.is_heldout) if held}
        assert not train_forms & held_forms and len(held_forms) == 8
        assert labels.units_text(labels.train.tolist()) == "80 groups x 32 forms"


def test_user_files_name_their_unit_with_group(tmp_path):
    import json

    from massive_checks.base.errors import DataError
    from massive_checks.language import contrast

    rows = [{"text": f"t{i}", "label": "pos" if i % 2 else "neg", "group": i // 4} for i in range(16)]
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (groups,) = contrast.read(str(path)).factors()
    assert len(set(groups)) == 4 and groups[:4] == (0, 0, 0, 0)
    rows[0]["form"] = "a"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match='"form" is given on some examples'):
        contrast.read(str(bad))


# --------------------------------------------------------------------------- checks that cannot fail here


def _activation_compare(tmp_path, bound: str):
    return _spec(
        tmp_path,
        "id: x\nclaim: c\nchecks:\n  - compare:\n"
        "      a: {measure: mlp_max, checkpoint: act, layers: 1, over_layers: max}\n"
        "      b: {measure: mlp_max, checkpoint: gate, layers: 1, over_layers: max}\n"
        f"    {bound}\n",
    )


def test_a_compare_the_activation_function_confines_is_inconclusive_not_holds(tmp_path, session_for):
    """|silu(x)| <= |x|, so max |act| / max |gate| is at most 1 on any Llama: a bound that admits
    every ratio in [silu(M) / M, 1] (M the largest-|gate| cell) cannot fail, and says so; a bound
    inside that range is decided on the data as usual."""
    from conftest import SMALL_DATA

    session = session_for("tiny-llama")
    wide = Evaluator(_activation_compare(tmp_path, "between: [0.0, 1.01]"), session, SMALL_DATA)
    observed = wide.observe().checks[0]
    low, high, why = observed.forced["value"]
    ratio = observed.values["value"].value
    assert 0.0 < low <= ratio <= high <= 1.0 + 1e-12  # the observed ratio lies in its forced range
    assert "SiLU" in why
    (check,) = wide.evaluate().checks
    assert check.verdict == INCONCLUSIVE and "cannot leave its bound on tiny-llama" in check.rows[0].note
    # A bound the construction does not settle: decided (the ratio is < 1 on a random model's
    # small gate values, so >= 0.999999 is contradicted, and >= 0 would be vacuous again).
    assert low < 0.999999
    (tight,) = Evaluator(_activation_compare(tmp_path, "at_least: 0.999999"), session, SMALL_DATA).evaluate().checks
    assert tight.verdict == CONTRADICTED and "cannot leave" not in (tight.rows[0].note or "")
    # The other side of the construction: a ratio above 1 is impossible, so at_most: 1.01 cannot fail.
    (upper,) = Evaluator(_activation_compare(tmp_path, "at_most: 1.01"), session, SMALL_DATA).evaluate().checks
    assert upper.verdict == INCONCLUSIVE and "cannot leave its bound" in upper.rows[0].note
