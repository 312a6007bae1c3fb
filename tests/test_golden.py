"""Golden snapshot workflow, end to end in pytester, on a tiny local-directory model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from massive_checks.engine import synthetic
from massive_checks.language import tolerance
from massive_checks.output import golden

SPEC = """
id: pinned
claim: The planted model's profile stays what it was.
models: any
data: {samples: 4, seq_len: 24}
golden: {rtol: 1.0e-4, keys: {"*median*": {rtol: 1.0e-3}}}
checks:
  - {measure: top1, layers: 1-3, at_least: 100}
  - {measure: massive_dims, equals: [37]}
"""
UPDATE = "--update-golden"


@pytest.fixture
def suite(pytester):
    model, tokenizer = synthetic.build("planted-llama")
    model.save_pretrained(pytester.path / "mymodel")
    tokenizer.save_pretrained(pytester.path / "mymodel")
    pytester.mkdir("specs")
    (pytester.path / "specs" / "pinned.yaml").write_text(SPEC)
    return pytester


def run(pytester, *args):
    return pytester.runpytest("specs", "--model", "mymodel", *args)


def perturb(pytester, scale=1.01):
    model, tokenizer = synthetic.build("planted-llama")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(scale)  # the planted activation grows 1%
    model.save_pretrained(pytester.path / "mymodel")


def test_golden_workflow(suite):
    path = suite.path / "golden" / "mymodel" / "pinned.json"
    first = run(suite)
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*golden*pinned.json was missing and has been written*"])
    snapshot = json.loads(path.read_text())
    assert snapshot["meta"]["dtype"] == "float32" and snapshot["meta"]["data"]["samples"] == 4
    assert any(k.startswith("baseline top1 (paper statistic) | layer") for k in snapshot["values"])

    run(suite).assert_outcomes(passed=1)

    perturb(suite)
    changed = run(suite)
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        [
            "*golden*pinned.json was recorded on another setup: revision*",
            "*key*expected*observed*abs err*rel err*tolerance*",
            "*top1*layer 1*rtol 0.0001, atol 1e-06*",
            "*to accept the new values: pytest specs/pinned.yaml --model mymodel -k 'pinned' --update-golden*",
        ]
    )
    assert golden.obtained_path(path).exists()
    assert json.loads(path.read_text()) == snapshot  # not overwritten without the flag

    run(suite, UPDATE).assert_outcomes(passed=1)
    assert not golden.obtained_path(path).exists()
    run(suite).assert_outcomes(passed=1)


def test_update_new_writes_missing_but_keeps_failing_ones(suite):
    run(suite).assert_outcomes(failed=1)
    perturb(suite)
    run(suite, "--update-golden=new").assert_outcomes(failed=1)


def test_corrupt_golden_is_a_clear_error_and_kept(suite):
    path = suite.path / "golden" / "mymodel" / "pinned.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1, "values": {"truncated')
    result = run(suite)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*golden*pinned.json is corrupt*rewrite it with --update-golden*"])
    assert path.read_text() == '{"format": 1, "values": {"truncated'
    run(suite, UPDATE).assert_outcomes(passed=1)
    assert golden.read(path)["format"] == golden.FORMAT


def test_orphans_are_named_and_selection_is_respected(suite):
    run(suite, UPDATE)
    (suite.path / "specs" / "pinned.yaml").write_text(SPEC.replace("id: pinned", "id: renamed"))
    result = run(suite, UPDATE, "-k", "renamed")
    result.stdout.fnmatch_lines(["*golden snapshots with no spec or model*", "*golden/mymodel/pinned.json*"])
    # A spec deselected by -k still exists: its snapshot (renamed.json) is no orphan; pinned.json is.
    (suite.path / "specs" / "second.yaml").write_text(SPEC.replace("id: pinned", "id: second"))
    selected = run(suite, UPDATE, "-k", "second")
    selected.assert_outcomes(passed=1)
    selected.stdout.fnmatch_lines(["*golden snapshots with no spec or model*", "*golden/mymodel/pinned.json*"])
    assert (suite.path / "golden" / "mymodel" / "renamed.json").exists() and "renamed.json" not in selected.stdout.str()
    # A run that does not collect the spec's file says nothing about its snapshots.
    (suite.path / "other").mkdir()
    (suite.path / "other" / "specs").mkdir()
    (suite.path / "other" / "specs" / "x.yaml").write_text(SPEC.replace("id: pinned", "id: x"))
    partial = suite.runpytest("other/specs", "--model", "mymodel", UPDATE)
    assert "no spec or model" not in partial.stdout.str()


def test_tolerances_are_per_key():
    config = tolerance.GoldenConfig(rtol=1e-4, keys={"*median*": tolerance.Tolerance(rtol=0.1)})
    expected = {"a top1 | layer 1": 1000.0, "a median | layer 1": 1.0, "dims": [1, 2]}
    observed = {"a top1 | layer 1": 1000.05, "a median | layer 1": 1.05, "dims": [1, 2]}
    assert golden.compare(expected, observed, config) == []
    observed["a top1 | layer 1"] = 1000.2
    observed["dims"] = [1, 3]
    found = {m.key: m for m in golden.compare(expected, observed, config)}
    assert set(found) == {"a top1 | layer 1", "dims"}
    assert found["a top1 | layer 1"].rel_error == pytest.approx(2e-4)
    assert found["dims"].tolerance is None


def test_atomic_writes_leave_readable_files(tmp_path):
    import stat

    from massive_checks.base.files import atomic_write

    path = tmp_path / "a" / "b.json"
    atomic_write(path, "{}")
    assert path.read_text() == "{}" and stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044


def test_infinite_and_undefined_values_match_themselves():
    """An interval end that is unbounded (inf) or a value that is undefined (nan) matches the same
    in the snapshot (inf - inf is nan, which no tolerance admits)."""
    from massive_checks.language.tolerance import GoldenConfig
    from massive_checks.output.golden import compare

    same = {"low": -math.inf, "high": math.inf, "none": math.nan}
    assert compare(same, dict(same), GoldenConfig()) == []
    assert [m.key for m in compare(same, {**same, "high": 5.0}, GoldenConfig())] == ["high"]
