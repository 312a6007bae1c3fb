"""Checks across models (a compare side's `model:`): one item when every named model is a --model,
deselected with its reason otherwise; both sides read the same passages, paired by passage.
Ground truth: planted-llama (main) plants a ~750 top-1 in block 1; planted-llama@init is the same
random initialisation without the plant (top-1 ~0.1)."""

from __future__ import annotations

import json

import pytest

from conftest import SMALL_DATA
from massive_checks.base.errors import SpecError
from massive_checks.engine.batches import tokenize
from massive_checks.language import load_file
from massive_checks.pipeline.suite import Options, Suite

MAIN, INIT = "planted-llama", "planted-llama@init"

ACROSS = """
id: planted-vs-init
claim: The trained checkpoint's peak is at least {bound}x the initialisation's.
checks:
  - compare:
      a: {{measure: top1, model: {a}, over_layers: max}}
      b: {{measure: top1, model: {b}, over_layers: max}}
    {kind}: {bound}
"""


def _write(tmp_path, text, name="across.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _spec(tmp_path, **fields):
    values = {"a": MAIN, "b": INIT, "kind": "at_least", "bound": 10, **fields}
    (spec,) = load_file(_write(tmp_path, ACROSS.format(**values)))
    return spec


def test_a_spec_across_models_is_one_spec_on_its_label(tmp_path):
    spec = _spec(tmp_path)
    assert spec.across == (MAIN, INIT)
    assert spec.label == f"{MAIN}+{INIT}"
    assert spec.applies_to(spec.label) and not spec.applies_to(MAIN)
    assert f"@ {INIT}" in spec.checks[0].key()  # the golden key names each side's model
    assert spec.quantities(INIT) == [spec.checks[0].versus]


@pytest.mark.parametrize(
    "text, key",
    [
        (ACROSS.format(a=MAIN, b=INIT, kind="at_least", bound=10).replace(f", model: {INIT}", ""), "checks[0].compare.b.model"),
        (ACROSS.format(a=MAIN, b=INIT, kind="at_least", bound=10) + "  - {measure: top1, at_least: 1}\n", "checks[1].measure"),
        ("models: [planted-llama]\n" + ACROSS.format(a=MAIN, b=INIT, kind="at_least", bound=10), "models"),
    ],
    ids=["side-without-model", "plain-check", "models-written"],
)
def test_an_incomplete_spec_across_models_does_not_load(tmp_path, text, key):
    with pytest.raises(SpecError) as error:
        load_file(_write(tmp_path, text))
    assert error.value.key == key


def _run(tmp_path, spec, models=(MAIN, INIT)):
    suite = Suite(Options(models=list(models), root=tmp_path, resamples=200))
    suite.plan(spec, spec.label)
    return suite, suite.run(spec, spec.label)


@pytest.mark.slow
def test_across_checkpoints_holds_and_fails_from_each_side(tmp_path):
    suite, run = _run(tmp_path, _spec(tmp_path))
    assert run.verdict.outcome == "holds"
    ratio = run.observation.checks[0].values["value"]
    assert ratio.value > 100  # ~750 / ~0.1
    assert ratio.units is not None and "passages" in ratio.units.key and " + " not in ratio.units.key  # paired by passage
    assert set(run.observation.setup["models"]) == {MAIN, INIT}
    assert suite.sessions[MAIN].forward_passes == 1 and suite.sessions[INIT].forward_passes == 1
    low, high = ratio.interval(0.95)
    above = _spec(tmp_path, bound=round(high * 2))  # a bound above the interval: contradicted
    assert _run(tmp_path, above)[1].verdict.outcome == "contradicted"
    below = _spec(tmp_path, kind="at_most", bound=round(low / 2))  # at_most below it: contradicted
    assert _run(tmp_path, below)[1].verdict.outcome == "contradicted"
    reversed_ = _spec(tmp_path, a=INIT, b=MAIN)  # init / main is ~1e-4, not >= 10
    assert _run(tmp_path, reversed_)[1].verdict.outcome == "contradicted"


def test_sides_on_different_tokenizers_pair_by_passage(load_model):
    """Two tokenizers give different token ids (the units' key before), the same passages."""
    with_bos, without = (
        tokenize(load_model("planted-llama").tokenizer, SMALL_DATA),
        tokenize(load_model("tiny-gpt2").tokenizer, SMALL_DATA),
    )
    assert with_bos.ids_hash != without.ids_hash
    assert with_bos.passages_hash == without.passages_hash


@pytest.mark.slow
def test_the_plugin_runs_it_once_or_deselects_it_with_the_reason(pytester):
    pytester.mkdir("specs")
    (pytester.path / "specs" / "across.yaml").write_text(ACROSS.format(a=MAIN, b=INIT, kind="at_least", bound=10))
    result = pytester.runpytest("specs", "--model", MAIN, "--model", INIT, "--report-dir", "out")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*{MAIN}: llama, revision synthetic-main-*", f"*{INIT}: llama, revision synthetic-init-*"])
    records = json.loads((pytester.path / "out" / "results.json").read_text())["results"]
    assert [r["model"] for r in records] == [f"{MAIN}+{INIT}"]
    alone = pytester.runpytest("specs", "--model", MAIN)
    assert alone.ret == pytest.ExitCode.NO_TESTS_COLLECTED  # nothing ran: exit 5, never a silent pass
    alone.stdout.fnmatch_lines(["*specs across models, deselected*", f"planted-vs-init: reads {INIT}, not among --model"])


def test_an_unknown_synthetic_revision_is_a_clear_error():
    from massive_checks.base.errors import ModelUnavailable
    from massive_checks.engine import models

    with pytest.raises(ModelUnavailable, match="planted-llama has revisions main, init, not 'step9'"):
        models.load("planted-llama@step9")
