"""The attacks listed in the reliability issue, each a test: a clear project error (file, line,
key) or a failing check, never a traceback; one bad spec never breaks another."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from conftest import SMALL_DATA
from massive_checks.base.errors import GoldenError, SpecError
from massive_checks.language import load_file, tolerance
from massive_checks.output import golden
from massive_checks.pipeline.evaluate import Evaluator

HEAD = "id: x\nclaim: c\nmodels: any\n"


def spec_error(tmp_path, content) -> SpecError:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content if isinstance(content, bytes) else textwrap.dedent(content).encode())
    with pytest.raises(SpecError) as info:
        load_file(path)
    assert str(info.value).startswith(str(path))
    return info.value


@pytest.mark.parametrize(
    "content, message",
    [
        (b"id: x\nclaim: \xff\xfe caf\xe9\n", "not UTF-8"),
        (b"id: x\nclaim: c\nchecks: " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested too deeply"),
        (b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\nclaim: *b\n", "aliases"),
        (b"id: x\nclaim: c\n? [a, b]\n: 1\nchecks: []\n", "plain name"),
        (b"- just\n- a list\n", "not a mapping"),
        (HEAD.encode() + b"claim2: x\n", "unknown key"),
        (b"id: x\nclaim: [1, 2]\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n", "claim"),
    ],
)
def test_hostile_files_are_spec_errors(tmp_path, content, message):
    assert message in str(spec_error(tmp_path, content))


@pytest.mark.parametrize(
    "check, key",
    [
        ("{measure: top1, config: [a], at_least: 1.0e-6}", "config"),
        ("{measure: top1, between: [a, b]}", "between[0]"),
        ("{measure: dim_peak, dim: 100000000000000000000000, at_least: 1.0e-6}", "dim"),
        ("{measure: top1, at_most: .inf}", "at_most"),
        ("{measure: top1, layers: 2-0, at_least: 1.0e-6}", "layers"),
        ("{measure: top1, layers: 0-99999999999999, at_least: 1.0e-6}", "layers"),
        ("{measure: top_neurons, layer: 1, dim: 2, k: 0, equals: [1]}", "k"),
        ("{measure: dim_peak, dim: true, at_least: 1.0e-6}", "dim"),
        ("{measure: massive_dims, at_most: 3}", "at_most"),
        ("{measure: explosion_point, layer: 1, change: [baseline, baseline], equals: out}", "change"),
        ("{measure: max_rel_diff, versus: baseline, site: blocks, at_most: 1}", "site"),
    ],
)
def test_bad_values_name_their_key(tmp_path, check, key):
    error = spec_error(tmp_path, HEAD + f"checks:\n  - {check}\n")
    assert error.key == f"checks[0].{key}" and error.line == 5


@pytest.mark.parametrize(
    "extra, key",
    [
        ("massive: {min_value: .nan}\nchecks:\n  - {measure: massive_dims, equals: []}\n", "massive.min_value"),
        ("golden: {rtol: .nan}\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n", "golden.rtol"),
        (
            "interventions:\n  a: ['dims:1@0=value:nan']\nchecks:\n  - {measure: top1, config: a, at_least: 1.0e-6}\n",
            "interventions.a",
        ),
        (
            "interventions:\n  a: ['heads:bottom0']\nchecks:\n  - {measure: top1, config: a, at_least: 1.0e-6}\n",
            "interventions.a",
        ),
        ("interventions:\n  a: ['attn:3-1']\nchecks:\n  - {measure: top1, config: a, at_least: 1.0e-6}\n", "interventions.a"),
        ("interventions:\n  a: [[x]]\nchecks:\n  - {measure: top1, config: a, at_least: 1.0e-6}\n", "interventions.a[0]"),
    ],
)
def test_bad_thresholds_tolerances_and_interventions(tmp_path, extra, key):
    assert spec_error(tmp_path, HEAD + extra).key == key


@pytest.mark.parametrize(
    "extra, key, message",
    [
        (
            "interventions:\n  a: ['neurons:99999@0']\nchecks:\n  - {measure: top1, config: a, at_least: 1.0e-6}\n",
            "interventions.a",
            r"units \[99999\] out of range",
        ),
        ("checks:\n  - {measure: top1, layers: 5-7, at_least: 1.0e-6}\n", "checks[0].layers", "out of range"),
        ("checks:\n  - {measure: explosion_point, layer: 9, equals: out}\n", "checks[0].layer", "has 3 blocks"),
        (
            "interventions:\n  a: ['heads:1.7']\nchecks:\n  - {measure: top1, config: a, at_least: 1.0e-6}\n",
            "interventions.a",
            "out of range",
        ),
    ],
)
def test_what_the_model_lacks_is_a_spec_error_before_any_pass(tmp_path, session_for, extra, key, message):
    path = tmp_path / "spec.yaml"
    path.write_text(HEAD + extra)
    (spec,) = load_file(path)
    session = session_for("tiny-llama")
    with pytest.raises(SpecError, match=message) as info:
        Evaluator(spec, session, SMALL_DATA).evaluate()
    assert info.value.key == key and session.forward_passes == 0


def test_a_spec_using_only_a_non_baseline_configuration_gets_its_figure(tmp_path, session_for):
    from massive_checks.output import figures

    path = tmp_path / "spec.yaml"
    path.write_text(HEAD + "interventions:\n  a: ['mlp:all']\nchecks:\n  - {measure: massive_dims, config: a, equals: []}\n")
    (spec,) = load_file(path)
    outcome = Evaluator(spec, session_for("tiny-llama"), SMALL_DATA).evaluate()
    assert figures.render(*outcome, tmp_path / "f.png").stat().st_size > 1000


def test_one_broken_spec_beside_the_committed_ones_fails_alone(pytester):
    """`layers:` past the model used to fail every spec on that model while the session was planned."""
    pytester.mkdir("specs")
    (pytester.path / "specs" / "a.yaml").write_text(
        textwrap.dedent("""
        id: fine
        claim: c
        models: any
        data: {samples: 2, seq_len: 12}
        checks:
          - {measure: top1, layers: 0-2, at_least: 1.0e-6}
        ---
        id: too-deep
        claim: c
        models: any
        data: {samples: 2, seq_len: 12}
        interventions:
          a: ['mlp:50']
        checks:
          - {measure: top1, layers: 40-41, at_least: 1.0e-6}
    """)
    )
    result = pytester.runpytest("specs", "--model", "tiny-llama", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert "INTERNALERROR" not in result.stdout.str() and "Traceback" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*a.yaml:*: checks[[]0[]].layers: layers '40-41': block 41 is out of range*"])


# --------------------------------------------------------------------------- second round (issue 28)


@pytest.mark.parametrize(
    "content, line",
    [
        (b"id: x\nclaim: c\nm: !!int a\n", 3),
        (b"id: x\nclaim: c\nm: !!float a\n", 3),
        (b"id: x\nclaim: c\nm: !!bool\n", 3),
        (b"!!map [1]\n", 1),
        (b"id: x\nclaim: c\nm: " + b"9" * 4400 + b"\n", 3),
        (b"id: x\nclaim: c\n---\n- 2\n", 4),
    ],
)
def test_yaml_values_their_tag_cannot_read_are_spec_errors_with_a_line(tmp_path, content, line):
    assert spec_error(tmp_path, content).line == line


@pytest.mark.parametrize(
    "record, message",
    [
        (b"\xff\xfe bad\n", "not UTF-8"),
        (json.dumps({"text": "a", "label": "pos", "prompt": 5}).encode(), '"prompt" must be a string'),
        (json.dumps({"text": "a", "label": "pos", "prompt": ["a"]}).encode(), '"prompt" must be a string'),
        (b'{"text": "a", "label": "pos", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}", "not a record"),
        (b'{"text": "a", "label": "pos", "n": ' + b"9" * 5000 + b"}", "not a record"),
    ],
)
def test_contrast_files_are_validated_like_spec_files(tmp_path, record, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(record + b"\n")
    error = spec_error(
        tmp_path,
        HEAD + f"vectors:\n  v: {{pairs: {pairs}, layer: 1, window: all, method: mean_diff}}\n"
        "checks:\n  - {measure: accuracy, vector: v, at_least: 0.5}\n",
    )
    assert error.key == "vectors.v.pairs" and message in str(error) and error.line == 5


def test_a_contrast_file_name_too_long_for_the_file_system_is_a_spec_error(tmp_path):
    error = spec_error(
        tmp_path,
        HEAD + f"vectors:\n  v: {{pairs: {'x' * 300}.jsonl, layer: 1, window: all, method: mean_diff}}\n"
        "checks:\n  - {measure: accuracy, vector: v, at_least: 0.5}\n",
    )
    assert "no such file" in str(error)


@pytest.mark.parametrize(
    "intervention, message",
    [
        ("dims:-1@0=value:1000", "integers >= 0"),
        ("attn:0@2", "not from @2"),
        ("attn:0#0", "does not apply to attn"),
        ("mlp:1#0", "does not apply to mlp"),
        ("heads:1.2@3", "not from @3"),
        ("dims:1.5@0", "integers >= 0"),
        ("neurons:a@1", "integers >= 0"),
        ("heads:1.-1", "integers >= 0"),
        ("heads:1", "LAYER.HEAD"),
        ("dims:5@0=value:1e308", "finite float32"),
        ("dims:5@0#-1", "integers >= 0"),
    ],
)
def test_the_intervention_grammar_accepts_only_what_it_means(tmp_path, intervention, message):
    error = spec_error(
        tmp_path, HEAD + f"interventions:\n  a: ['{intervention}']\nchecks:\n  - {{measure: top1, config: a, at_least: 1.0e-6}}\n"
    )
    assert error.key == "interventions.a" and message in str(error) and error.line == 5


@pytest.mark.parametrize(
    "content, message",
    [
        ("# nothing here\n", "holds no spec"),
        ("id: x\nclaim: c\nmodels: []\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n", "names no model"),
        (
            "id: x\nclaim: c\nmodels: [tiny-llama]\nxfail: {tiny-gpt2: r}\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n",
            "does not run on",
        ),
    ],
)
def test_nothing_empty_passes_for_something(tmp_path, content, message):
    assert message in str(spec_error(tmp_path, content))


@pytest.mark.parametrize(
    "check, key",
    [
        ("{measure: energy_share, vector: v, dims: 'top:1000', at_most: 0.5}", "checks[0].dims"),
        ("{measure: dominant_dims, vector: v, k: 1000, contains: [1]}", "checks[0].k"),
        ("{measure: base_coef, vector: v, without: 'top:1000', at_least: 1}", "checks[0].without"),
    ],
)
def test_dim_sets_past_the_model_width_are_spec_errors_before_any_pass(tmp_path, session_for, check, key):
    path = tmp_path / "spec.yaml"
    path.write_text(HEAD + f"vectors:\n  v: {{pairs: refusal, layer: 1, window: all, method: mean_diff}}\nchecks:\n  - {check}\n")
    (spec,) = load_file(path)
    session = session_for("tiny-llama")
    with pytest.raises(SpecError, match="residual stream has") as info:
        Evaluator(spec, session, SMALL_DATA).evaluate()
    assert info.value.key == key and session.forward_passes == 0


def test_a_measure_parameter_past_the_model_fails_its_spec_alone(pytester):
    """top_neurons at a block tiny-llama lacks used to plan captures there for every spec sharing
    its data, which then failed blaming themselves."""
    pytester.mkdir("specs")
    consistency = (Path(__file__).parent.parent / "specs" / "any" / "consistency.yaml").read_text()
    (pytester.path / "specs" / "consistency.yaml").write_text(consistency)
    (pytester.path / "specs" / "a.yaml").write_text(
        "id: loss\nclaim: c\nmodels: any\nchecks:\n  - {measure: loss, at_least: 0.001}\n---\n"
        "id: culprit\nclaim: c\nmodels: any\nchecks:\n  - {measure: top_neurons, layer: 3, dim: 0, contains: [1]}\n"
    )
    result = pytester.runpytest("specs", "--model", "tiny-llama", "-p", "no:cacheprovider", "-rA")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 1, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["FAILED specs/a.yaml::culprit*"])


def test_a_spec_file_that_does_not_load_is_one_failing_item_and_the_rest_run(pytester):
    pytester.mkdir("specs")
    (pytester.path / "specs" / "good.yaml").write_text(
        "id: good\nclaim: c\nmodels: any\ndata: {samples: 2, seq_len: 12}\nchecks:\n  - {measure: loss, at_least: 0.001}\n"
    )
    (pytester.path / "specs" / "bad.yaml").write_text("id: bad\nclaim: c\nchecks:\n  - {measure: nope, at_least: 1}\n")
    result = pytester.runpytest("specs", "--model", "tiny-llama", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED and "Interrupted" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*bad.yaml:4: checks[[]0[]]*"])


# --------------------------------------------------------------------------- goldens


def snapshot(values=None):
    return golden.snapshot(values or {"v": 1.0}, {"model": "m", "revision": "r", "dtype": "float32", "data": {}})


@pytest.mark.parametrize(
    "document",
    [
        {"format": 1, "values": {"v": 1.0}},  # meta missing
        {"format": 1, "meta": [1, 2], "values": {"v": 1.0}},  # meta a list
        {"format": 1, "meta": {}, "values": [1.0]},
        [1, 2, 3],
    ],
)
def test_malformed_goldens_are_golden_errors_and_the_update_flag_repairs_them(tmp_path, document):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(document))
    result = golden.check(path, snapshot(), tolerance.GoldenConfig(), update=None)
    assert result.status == "corrupt" and str(path) in result.message
    assert json.loads(path.read_text()) == document  # never overwritten without the flag
    assert golden.check(path, snapshot(), tolerance.GoldenConfig(), update="all").status == "updated"
    assert golden.check(path, snapshot(), tolerance.GoldenConfig(), update=None).status == "match"


def test_a_golden_path_that_is_a_directory_is_a_golden_error(tmp_path):
    (tmp_path / "g.json").mkdir()
    for update in (None, "all"):
        with pytest.raises(GoldenError, match="is a directory"):
            golden.check(tmp_path / "g.json", snapshot(), tolerance.GoldenConfig(), update=update)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_golden_directory_is_a_golden_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(GoldenError, match="cannot write golden"):
            golden.check(folder / "g.json", snapshot(), tolerance.GoldenConfig(), update=None)
    finally:
        folder.chmod(0o700)


def test_a_write_failure_is_a_golden_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(golden, "atomic_write", refuse)
    with pytest.raises(GoldenError, match="cannot write golden .*Permission denied"):
        golden.check(tmp_path / "g.json", snapshot(), tolerance.GoldenConfig(), update=None)


def test_the_overflow_message_names_the_real_dtype(session_for):
    from massive_checks.engine.session import numerics_message

    lm = session_for("tiny-llama").lm
    message = numerics_message(lm, "blocks.1.out", "baseline")
    assert "float32" in message and "float16" not in message and "blocks.1.out" in message and lm.name in message


# --------------------------------------------------------------------------- broken models


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, load_model):
    folder = tmp_path_factory.mktemp("tiny")
    lm = load_model("tiny-llama")
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return folder


def test_corrupt_weights_are_one_clear_error(tmp_path, saved_model):
    import shutil

    from massive_checks.base.errors import ModelUnavailable
    from massive_checks.engine import models

    broken = tmp_path / "broken"
    shutil.copytree(saved_model, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelUnavailable, match="loading from the local directory failed"):
        models.load(str(broken))


def test_pickle_only_weights_need_the_flag(tmp_path, saved_model, load_model):
    import shutil

    import torch

    from massive_checks.base.errors import ModelUnavailable
    from massive_checks.engine import models

    pickled = tmp_path / "pickled"
    shutil.copytree(saved_model, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(load_model("tiny-llama").model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelUnavailable, match="only pickle weights"):
        models.load(str(pickled))
    assert models.load(str(pickled), allow_pickle=True).n_layers == 3


@pytest.mark.parametrize("name", ["./no/such/model", "/abs/missing/dir", "a/b/c"])
def test_path_like_missing_names_say_so_at_once(name):
    from massive_checks.base.errors import ModelUnavailable
    from massive_checks.engine import models

    with pytest.raises(ModelUnavailable, match="no such directory"):
        models.load(name)


def test_a_vector_cleaning_past_the_model_width_is_a_spec_error_before_any_pass(tmp_path, session_for):
    path = tmp_path / "spec.yaml"
    path.write_text(
        HEAD + "vectors:\n  v: {pairs: refusal, layer: 1, window: all, method: mean_diff, clean: {top: 1000}}\n"
        "checks:\n  - {measure: accuracy, vector: v, at_least: 0.5}\n"
    )
    (spec,) = load_file(path)
    session = session_for("tiny-llama")
    with pytest.raises(SpecError, match="clean top:1000: .* residual stream has") as info:
        Evaluator(spec, session, SMALL_DATA).evaluate()
    assert info.value.key == "vectors.v.clean" and session.forward_passes == 0
