"""The pytest plugin end to end, in a sandboxed pytest run (pytester)."""

from __future__ import annotations

import json

import pytest

from massive_checks.engine import gguf_cache, notices
from massive_checks.engine.synthetic import PLANT

PLANTED_SPECS = f"""
id: planted-dim
claim: The planted model's massive activation is dim {PLANT["dim"]} from block {PLANT["layer"]} on.
models: [planted-llama]
data: {{samples: 4, seq_len: 32}}
checks:
  - {{measure: top1_dim, layers: {PLANT["layer"]}-3, equals: {PLANT["dim"]}}}
  - {{measure: emergence_layer, equals: {PLANT["layer"]}}}
---
id: planted-wrong-bound
claim: The planted activation is above one million (false).
models: [planted-llama]
data: {{samples: 4, seq_len: 32}}
checks:
  - {{measure: top1, layers: 2-3, at_least: 1000000}}
---
id: planted-known-false
claim: The planted activation emerges at block 0 (false, kept as a reminder).
models: [planted-llama]
xfail: the plant is in block {PLANT["layer"]}, not 0
data: {{samples: 4, seq_len: 32}}
checks:
  - {{measure: emergence_layer, equals: 0}}
---
id: gpt2-only
claim: Only for gpt2.
models: [gpt2]
checks:
  - {{measure: top1, at_least: 1}}
"""


@pytest.fixture
def planted_suite(pytester):
    pytester.mkdir("specs")
    (pytester.path / "specs" / "planted.yaml").write_text(PLANTED_SPECS)
    return pytester


def test_specs_run_pass_fail_xfail_and_deselect(planted_suite):
    result = planted_suite.runpytest("specs", "--model", "planted-llama", "--report-dir", "out")
    result.assert_outcomes(passed=1, failed=1, xfailed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*claim contradicted on planted-llama*: The planted activation is above one million*",
            "*where*expected*observed*",
            "*contradicted*layer 2*>= 1e+06*",
            "*planted-llama: llama, revision synthetic-*; loaded 1 time; 1 forward passes*",
        ]
    )
    results = json.loads((planted_suite.path / "out" / "results.json").read_text())
    by_id = {r["spec"]: r for r in results["results"]}
    assert by_id["planted-dim"]["status"] == "passed"
    assert by_id["planted-wrong-bound"]["status"] == "failed"
    assert by_id["planted-known-false"]["status"] == "xfailed"
    assert len(by_id["planted-dim"]["observed"]["baseline"]["top1"]) == 4  # numbers per layer
    assert results["models"]["planted-llama"]["dtype"] == "float32"


def test_a_known_false_claim_that_passes_is_reported(planted_suite):
    spec = planted_suite.path / "specs" / "planted.yaml"
    spec.write_text(spec.read_text().replace("equals: 0}", f"equals: {PLANT['layer']}}}"))
    result = planted_suite.runpytest("specs", "--model", "planted-llama", "-k", "known")
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines(["*XPASS(strict)*"])


GENERIC = """
id: generic-{n}
claim: Any model has a largest activation.
checks:
  - {{measure: top1, at_least: 1.0e-6}}
"""


def test_unloadable_model_fails_with_one_clear_message(pytester, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytester.mkdir("specs")
    (pytester.path / "specs" / "generic.yaml").write_text("---".join(GENERIC.format(n=n) for n in range(3)))
    result = pytester.runpytest("specs", "--model", "no-such-org/no-such-model")
    result.assert_outcomes(failed=3)
    text = result.stdout.str()
    assert text.count("no-such-org/no-such-model: NOT LOADED") == 1
    assert "To make it available" in text and "Traceback" not in text


def test_a_model_no_spec_applies_to_is_named(planted_suite):
    result = planted_suite.runpytest("specs", "--model", "tiny-opt")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["*tiny-opt: no spec applies (4 deselected)*"])


def test_malformed_spec_is_a_failing_item_with_file_and_line(pytester):
    pytester.mkdir("specs")
    (pytester.path / "specs" / "bad.yaml").write_text("id: x\nclaim: c\nchecks:\n  - {measure: top9, at_least: 1}\n")
    result = pytester.runpytest("specs", "--model", "planted-llama")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*specs/bad.yaml:4: checks[[]0[]].measure: unknown measure 'top9'*"])


OPENAPI = "openapi: 3.0.0\ninfo: {title: shop, version: '1'}\npaths: {}\n"
A_SPEC = "id: planted\nclaim: c\nchecks:\n  - {measure: emergence_layer, equals: 1}\n"


def test_other_yaml_in_a_users_project_is_not_collected(pytester):
    """A project with an OpenAPI file at specs/api.yaml and one ordinary test: 1 passed, whether
    pytest runs with no arguments, on `.`, or with testpaths."""
    pytester.mkdir("specs")
    (pytester.path / "specs" / "api.yaml").write_text(OPENAPI)
    pytester.makepyfile(test_shop="def test_ok():\n    assert 1 + 1 == 2\n")
    for args in ((), (".",)):
        result = pytester.runpytest(*args, "-p", "no:cacheprovider")
        result.assert_outcomes(passed=1)
    pytester.makeini("[pytest]\ntestpaths = specs test_shop.py\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_spec_files_are_those_the_user_names(pytester):
    """Named on the command line (a folder or a file), or under a folder of the ini option
    massive_checks_specs: collected; the same file elsewhere is not."""
    pytester.mkdir("claims")
    (pytester.path / "claims" / "planted.yaml").write_text(A_SPEC)
    run = lambda *args: pytester.runpytest(*args, "--model", "planted-llama", "-p", "no:cacheprovider")
    run().assert_outcomes()  # not asked for: nothing collected
    run("claims").assert_outcomes(passed=1)
    run("claims/planted.yaml").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nmassive_checks_specs = claims\ntestpaths = claims\n")
    run().assert_outcomes(passed=1)


def test_runs_without_pytest_xdist(planted_suite):
    """A plain `pip install massive_checks` has no xdist: its hooks must not be registered then
    (it used to end in INTERNALERROR: unknown hook 'pytest_configure_node')."""
    result = planted_suite.runpytest_subprocess("specs", "--model", "planted-llama", "-p", "no:xdist")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1, failed=1, xfailed=1, deselected=1)


def test_the_gpu_ci_example_uses_options_the_plugin_has(pytester):
    """examples/massive-checks-gpu.yml cannot run here (no GPU runner): its pytest command's
    options must at least be ones the plugin registers, and it must gate on float32."""
    import re
    from pathlib import Path

    import yaml

    workflow = yaml.safe_load((Path(__file__).parents[1] / "examples" / "massive-checks-gpu.yml").read_text())
    commands = [step["run"] for step in workflow["jobs"]["specs"]["steps"] if "pytest specs/" in step.get("run", "")]
    assert len(commands) == 1
    used = set(re.findall(r"(--[a-z][a-z-]*)", commands[0]))
    assert {"--model", "--device", "--dtype", "--golden-dir", "--report-dir"} <= used
    assert "--dtype float32" in commands[0]
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    registered = set(re.findall(r"(--[a-z][a-z-]*)", help_text))
    assert used <= registered, used - registered


def test_an_unrelated_project_imports_nothing_heavy(pytester):
    """The entry-point plugin in a project with no specs: no torch, transformers, numpy or
    matplotlib, and the suite is never built (issue 27)."""
    pytester.makepyfile(
        test_unrelated="""
        import sys

        def test_nothing_heavy_was_imported(request):
            heavy = [m for m in ("torch", "transformers", "matplotlib", "numpy", "massive_checks.pipeline.suite") if m in sys.modules]
            assert heavy == []
            assert request.config.pluginmanager.get_plugin("massive_checks_state") is None
    """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:xdist"
    )
    result.assert_outcomes(passed=1)


def test_a_massive_checks_option_wakes_the_plugin(pytester):
    pytester.makepyfile(
        test_awake="""
        def test_awake(request):
            assert request.config.pluginmanager.get_plugin("massive_checks_state") is not None
    """
    )
    pytester.runpytest("--resamples", "500", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_first_load_announces_its_dequantization(tmp_path, monkeypatch):
    """Which model, that it happens once, and about how long: through the writers in NOTICES (the
    plugin's writes through pytest's terminal reporter, the CLI's to stderr)."""
    heard = []
    monkeypatch.setattr(notices, "NOTICES", [heard.append])
    monkeypatch.setattr(gguf_cache, "_dequantize", lambda name, gguf, target: None)
    file = tmp_path / "m.gguf"
    file.write_bytes(b"\0" * 2**20)
    gguf_cache._write_dequantized_cache("gemma3-270m", file, tmp_path / "cache" / "x")
    assert "gemma3-270m: first use on this machine" in heard[0] and "about 35 s" in heard[0] and "1 MiB" in heard[0]
    assert heard[1].startswith("gemma3-270m: dequantized and cached in") and len(heard) == 2  # quick: no progress line


def test_a_long_dequantization_shows_a_progress_bar(tmp_path, monkeypatch):
    """While the step runs, a line every PROGRESS_EVERY seconds: a bar of the elapsed time against
    the expected, which model and what it does; none after it ends."""
    import time

    heard = []
    monkeypatch.setattr(notices, "NOTICES", [heard.append])
    monkeypatch.setattr(notices, "PROGRESS_EVERY", 0.05)
    monkeypatch.setattr(notices, "DEQUANTIZE_SECONDS", {"gemma3-270m": 0.4})
    monkeypatch.setattr(gguf_cache, "_dequantize", lambda name, gguf, target: time.sleep(0.3))
    file = tmp_path / "m.gguf"
    file.write_bytes(b"\0" * 1024)
    gguf_cache._write_dequantized_cache("gemma3-270m", file, tmp_path / "cache" / "x")
    bars = [line for line in heard if "[" in line]
    assert 2 <= len(bars) <= 7 and all(line.startswith("gemma3-270m: dequantizing [") for line in bars)
    filled = [line.split("[")[1].split("]")[0].count("#") for line in bars]
    assert (
        filled == sorted(filled) and filled[-1] > filled[0] and all(len(line.split("[")[1].split("]")[0]) == 20 for line in bars)
    )
    assert heard[-1].startswith("gemma3-270m: dequantized and cached in")
    time.sleep(0.15)
    assert not heard[-1].startswith("gemma3-270m: dequantizing")  # the ticker stopped with the step


NOTICE_CONFTEST = """
from massive_checks.engine import models, notices

_load = models.load


def load(name, *args, **kwargs):  # a first use, as a GGUF's dequantizing announces it
    notices.notice(f"{name}: dequantizing into the cache (first use, about 17 s)")
    return _load(name, *args, **kwargs)


models.load = load
"""


@pytest.mark.parametrize("args", [(), ("-s",), ("-n", "2")], ids=["captured", "-s", "xdist"])
def test_the_first_use_notice_reaches_pytests_output(pytester, args):
    """The notice a first load writes (dequantizing, its progress) is in pytest's output: on the
    terminal past output capturing, and from xdist workers in the controller's warnings summary."""
    if args[:1] == ("-n",):
        pytest.importorskip("xdist")
    pytester.makeconftest(NOTICE_CONFTEST)
    pytester.mkdir("specs")
    (pytester.path / "specs" / "planted.yaml").write_text(A_SPEC)
    result = pytester.runpytest_subprocess("specs", "--model", "planted-llama", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*massive_checks: planted-llama: dequantizing into the cache (first use, about 17 s)*"])


STEERING_SPEC = """
id: steered
claim: steering a tiny model moves nothing much
models: [tiny-llama]
vectors:
  md: {pairs: refusal, layer: 1, window: "first:5", method: mean_diff}
steering:
  md: {vector: md, coefs: [3, 30], prompts: 3, max_new_tokens: 4}
checks:
  - {measure: trait_effect, steering: md, at_least: -99}
---
id: vectors-only
claim: the tiny model's refusal vector has a norm
models: [tiny-llama]
vectors:
  md: {pairs: refusal, layer: 1, window: "first:5", method: mean_diff}
checks:
  - {measure: base_coef, vector: md, at_least: 1}
"""


def test_specs_that_generate_text_carry_a_mark_that_leaves_them_out(pytester):
    """CI's test command runs `-m 'not massive_generates'`: the steered spec goes, the one that
    only reads a vector stays."""
    pytester.mkdir("specs")
    (pytester.path / "specs" / "steering.yaml").write_text(STEERING_SPEC)
    left_out = pytester.runpytest("specs", "--model", "tiny-llama", "--collect-only", "-q", "-m", "not massive_generates")
    left_out.stdout.fnmatch_lines(["*vectors-only[[]tiny-llama[]]", "1/2 tests collected (1 deselected)*"])
    only = pytester.runpytest("specs", "--model", "tiny-llama", "--collect-only", "-q", "-m", "massive_generates")
    only.stdout.fnmatch_lines(["*steered[[]tiny-llama[]]", "1/2 tests collected (1 deselected)*"])
