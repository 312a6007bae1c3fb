"""A check fails when its claim is false: no key is silently dropped, compare sides are defined at
collection, `#massive` edits find the massive cells per sequence, and check keys are stable."""

from __future__ import annotations

import textwrap

import pytest
import torch

from conftest import SMALL_DATA
from massive_checks.base.errors import SpecError
from massive_checks.engine import hooks, readings
from massive_checks.engine.synthetic import PLANT
from massive_checks.language import interventions, load_file
from massive_checks.language.data import DataConfig
from massive_checks.output import html, results
from massive_checks.pipeline.evaluate import Evaluator


def spec_from(tmp_path, text: str, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def one_spec(tmp_path, text: str):
    (spec,) = load_file(spec_from(tmp_path, text))
    return spec


HEAD = "id: x\nclaim: c\nmodels: any\n"
ZEROED = "interventions:\n  zeroed: ['dims:37@1#massive']\n"


def test_an_aggregate_on_a_single_value_is_rejected_not_ignored(tmp_path):
    """The issue's case: `over_layers: max_abs` on a loss change was dropped, so a -73% change
    passed 'max_abs <= 1%'. Now the key is an error at its line."""
    path = spec_from(
        tmp_path,
        HEAD + ZEROED + "checks:\n"
        "  - {measure: loss, steps: [{change: [zeroed, baseline]}, {over_layers: max_abs}], at_most: 0.01}\n",
    )
    with pytest.raises(SpecError) as info:
        load_file(path)
    assert (info.value.line, info.value.key) == (7, "checks[0].steps")
    assert "has no effect" in str(info.value)


def test_the_two_sided_form_fails_from_either_side(tmp_path, session_for):
    """One value, bounded on both sides: a large change fails in either direction."""
    session = session_for("planted-llama")
    for change in ("[zeroed, baseline]", "[baseline, zeroed]"):
        spec = one_spec(
            tmp_path,
            HEAD + ZEROED + "checks:\n"
            f"  - {{measure: dim_peak, dim: 37, steps: [{{over_layers: max}}, {{change: {change}}}], between: [-0.01, 0.01]}}\n",
        )
        outcome = Evaluator(spec, session, SMALL_DATA).evaluate()
        (row,) = outcome.checks[0].rows
        assert abs(row.observed.value) > 0.5 and outcome.verdict.outcome == "contradicted", change


@pytest.mark.parametrize(
    "check, key, message",
    [
        ("{measure: loss, over_layers: mean, at_most: 5}", "over_layers", "reduces a number per layer"),
        ("{measure: loss, steps: [{over_layers: mean}], at_most: 5}", "steps", "reduces a number per layer; loss is not one"),
        ("{measure: head_score, head: '1.0', layers: 1, at_least: 1.0e-6}", "layers", "not per layer"),
        ("{measure: top1, config: zeroed, change: [baseline, zeroed], at_most: 0}", "config", "come from it"),
        ("{measure: massive_dims, change: [baseline, zeroed], equals: []}", "change", "not a number"),
        (
            "{measure: top1, change: [baseline, zeroed], difference: [baseline, zeroed], at_least: 1.0e-6}",
            "difference",
            "two steps",
        ),
        ("{measure: top1, change: [baseline, zeroed], over_layers: max, at_most: 0}", "over_layers", "in the order they apply"),
        (
            "{measure: top1, steps: [{change: [baseline, zeroed]}, {change: [zeroed, baseline]}], at_most: 0}",
            "steps",
            "at most one change",
        ),
        ("{measure: top1, steps: [{change: [baseline, zeroed], over_layers: max}], at_most: 0}", "steps", "must be one of"),
        ("{measure: top1, steps: [], at_most: 0}", "steps", "empty list of steps"),
        ("{measure: top1_dim, over_layers: max, equals: 3}", "over_layers", "reduces a number per layer"),
        ("{measure: median, statistic: max_over_sequences, at_least: 1.0e-6}", "statistic", "has one statistic"),
        (
            "{measure: top1, statistic: maximum, at_least: 1.0e-6}",
            "statistic",
            "must be one of 'paper', 'max_over_sequences' or 'cv_over_sequences'",
        ),
        ("{measure: massive_dims, at_least: 3}", "at_least", "bounds a number: write count: true"),
        ("{measure: top1, subset_of: [1]}", "subset_of", "does not apply to top1"),
        ("{measure: top1, at_least: 1, rel: 0.1}", "rel", "only applies to approx"),
        ("{measure: top1, at_least: 1, at_most: 2}", "at_most", "exactly one bound"),
        ("{measure: top_neurons, layer: 1, dim: 3, k: 0, equals: [1]}", "k", "greater than or equal to 1"),
        ("{measure: head_score, head: 1.10, at_least: 1.0e-6}", "head", "quoted"),
        ("{measure: dim_peak, dim: true, at_least: 1.0e-6}", "dim", "not true/false"),
        ("{measure: top1, at_least: .nan}", "at_least", "finite number"),
        ("{measure: top1, between: [0, .inf]}", "between[1]", "finite number"),
        ("{measure: top1, between: [2, 1]}", "between", "low <= high"),
        ("{measure: top1, approx: 3, rel: .nan}", "rel", "finite number"),
    ],
)
def test_keys_that_would_have_no_effect_are_errors_with_line_and_key(tmp_path, check, key, message):
    path = spec_from(tmp_path, HEAD + ZEROED + f"checks:\n  - {check}\n")
    with pytest.raises(SpecError) as info:
        load_file(path)
    assert (info.value.line, info.value.key) == (7, f"checks[0].{key}") and message in str(info.value)


@pytest.mark.parametrize(
    "extra, key, message",
    [
        ("massive: {min_value: 50}\n", "massive", "applies the massive rule"),
        ("xfail: known false\ninconclusive: undecided\n", "inconclusive", "not both"),
        ("notes: [a, b]\n", "notes", "valid string"),
        ("xfail: true\n", "xfail", "valid string"),
    ],
)
def test_top_level_keys_with_no_effect_are_errors(tmp_path, extra, key, message):
    path = spec_from(tmp_path, HEAD + extra + "checks:\n  - {measure: top1, at_least: 1}\n")
    with pytest.raises(SpecError, match=message) as info:
        load_file(path)
    assert info.value.key == key


def test_notes_are_kept_and_reach_the_report(tmp_path, session_for):

    spec = one_spec(
        tmp_path, HEAD + "notes: The seed sliced heads after c_proj.\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n"
    )
    assert spec.notes == "The seed sliced heads after c_proj."
    record = results.outcome_record(*Evaluator(spec, session_for("tiny-llama"), SMALL_DATA).evaluate())
    assert record["notes"] == spec.notes
    assert "The seed sliced heads after c_proj." in html.write_html(tmp_path, [record], {}, {}).read_text()


@pytest.mark.parametrize(
    "a, b",
    [
        ("{measure: top1, layers: 1-2}", "{measure: top1, layers: 0}"),  # KeyError at run time before
        ("{measure: top1, layers: 1}", "{measure: loss}"),  # one side per layer, one value
        ("{measure: massive_dims}", "{measure: top1, over_layers: max}"),  # not a number
    ],
)
def test_compare_sides_are_checked_at_collection(tmp_path, a, b):
    path = spec_from(tmp_path, HEAD + f"checks:\n  - compare:\n      a: {a}\n      b: {b}\n    at_least: 1\n")
    with pytest.raises(SpecError, match="compare"):
        load_file(path)


def test_compare_on_the_same_layers_is_row_by_row_and_can_fail(tmp_path, session_for):
    session = session_for("tiny-llama")
    text = (
        HEAD
        + "checks:\n  - compare:\n      a: {measure: top1, layers: 1-2}\n      b: {measure: median, layers: 1-2}\n    at_least: %s\n"
    )
    holds = Evaluator(one_spec(tmp_path, text % 1), session, SMALL_DATA).evaluate()
    assert [r.key for r in holds.checks[0].rows] == ["layer 1", "layer 2"] and holds.passed
    assert not Evaluator(one_spec(tmp_path, text % 1e9), session, SMALL_DATA).evaluate().passed


def test_an_empty_layer_range_cannot_pass(tmp_path, session_for, monkeypatch):
    from massive_checks.language.objects import Quantity

    spec = one_spec(tmp_path, HEAD + "checks:\n  - {measure: top1, layers: '1', at_least: 1.0e-6}\n")
    evaluator = Evaluator(spec, session_for("tiny-llama"), SMALL_DATA)
    monkeypatch.setattr(Quantity, "blocks", lambda self, n_layers: [])  # what an empty range gives
    outcome = evaluator.evaluate()
    assert outcome.checks[0].rows[0].key == "no layers" and not outcome.passed


def test_check_keys_are_stable_across_rewording_and_reordering(tmp_path, session_for):
    session = session_for("tiny-llama")
    first = one_spec(
        tmp_path,
        "id: x\nclaim: first wording\nchecks:\n  - {measure: top1, layers: 1, at_least: 1.0e-6}\n"
        "  - {id: peak, measure: median, layers: 2, at_least: 1.0e-6}\n",
    )
    second = one_spec(
        tmp_path,
        "id: x\nclaim: other words\nchecks:\n  - {id: peak, measure: median, layers: 2, at_least: 1.0e-6}\n"
        "  - {measure: top1, layers: 1, at_least: 1.0e-6}\n",
    )
    a = Evaluator(first, session, SMALL_DATA).evaluate().values()
    b = Evaluator(second, session, SMALL_DATA).evaluate().values()
    assert a == b and "check: peak | layer 2" in a and "check: top1 [baseline] layers 1 | layer 1" in a


def test_duplicate_check_ids_are_rejected(tmp_path):
    path = spec_from(
        tmp_path, HEAD + "checks:\n  - {id: a, measure: top1, at_least: 1.0e-6}\n  - {id: a, measure: median, at_least: 1.0e-6}\n"
    )
    with pytest.raises(SpecError, match="duplicate check id 'a'"):
        load_file(path)


# --------------------------------------------------------------------------- #massive edits


@pytest.fixture
def second_start_token(tmp_path):
    """Data where one sequence carries the planted <s> (the massive token) at position 4 too."""
    path = tmp_path / "texts.txt"
    lines = [f"plain text number {i}, long enough to pad the others" for i in range(5)]
    lines[2] = "abc <s> and then some more text"
    path.write_text("\n".join(lines) + "\n")
    return DataConfig(dataset=str(path), samples=5, seq_len=40)


def dim_after_block(session, data, texts):
    intervention = session.resolve(data, [interventions.parse(t) for t in texts])
    view = session.view(data, intervention)
    return view.block(PLANT["layer"]).cell_max[:, PLANT["dim"]]  # [T] max |a| over sequences


def test_massive_tokens_are_found_per_sequence_not_assumed(session_for, second_start_token):
    session, data = session_for("planted-llama"), second_start_token
    baseline = session.view(data)
    rows, _ = readings.massive_cells(baseline, [PLANT["layer"]], [PLANT["dim"]])[(PLANT["layer"], PLANT["dim"])]
    assert rows[2] == (0, 5) and all(r == (0,) for i, r in enumerate(rows) if i != 2)
    first_only = dim_after_block(session, data, [f"dims:{PLANT['dim']}@{PLANT['layer']}#0"])
    assert float(first_only[5]) > 500  # #0 misses the second massive token
    found = dim_after_block(session, data, [f"dims:{PLANT['dim']}@{PLANT['layer']}#massive"])
    assert float(found.max()) < 5


def test_massive_mean_is_the_mean_of_the_massive_values(session_for, second_start_token):
    session, data = session_for("planted-llama"), second_start_token
    layer, dim = PLANT["layer"], PLANT["dim"]
    name = hooks.site(layer, "out")
    baseline = session.view(data)
    stats = baseline.captures([name], [name], slices=[(name, dim)])[name]
    signed = stats.slice(dim)
    by_hand = float(torch.stack([signed[s, t] for s, t in [(0, 0), (1, 0), (2, 0), (2, 5), (3, 0), (4, 0)]]).mean())
    (ablation,) = session.resolve(data, [interventions.parse(f"dims:{dim}@{layer}#massive=mean")])
    assert ablation.value == pytest.approx(by_hand, rel=1e-6) and abs(by_hand) > 500
    edited = session.view(data, (ablation,)).captures([name], [name], slices=[(name, dim)])[name].slice(dim)
    assert float(edited[2, 5]) == pytest.approx(by_hand, rel=1e-5) and float(edited[2, 3]) == float(signed[2, 3])
