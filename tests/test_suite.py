"""The session logic without pytest (suite.Suite), from Python and from the `check` command; and
per-directory defaults."""

from __future__ import annotations

import json
import re

import pytest
from test_plugin import PLANTED_SPECS

from massive_checks import cli
from massive_checks.base.errors import SpecError
from massive_checks.engine.synthetic import PLANT
from massive_checks.language import load_file
from massive_checks.pipeline.suite import Options, Suite


@pytest.fixture
def specs_dir(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "planted.yaml").write_text(PLANTED_SPECS)
    return folder


def test_a_suite_runs_specs_from_python(tmp_path, specs_dir):
    suite = Suite(Options(models=["planted-llama"], root=tmp_path))
    specs = [s for s in load_file(specs_dir / "planted.yaml") if s.applies_to("planted-llama")]
    for spec in specs:
        suite.plan(spec, "planted-llama")
    results = {spec.id: suite.run(spec, "planted-llama") for spec in specs}
    assert results["planted-dim"].verdict.passed and not results["planted-wrong-bound"].verdict.passed
    assert not results["planted-known-false"].verdict.passed and results["planted-known-false"].verdict.xfail_reason
    assert suite.sessions["planted-llama"].forward_passes == 1  # three specs, one configuration: one pass
    suite.finish()
    document = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert sorted(r["spec"] for r in document["results"]) == sorted(results)
    exported = suite.export()
    other = Suite(Options(models=["planted-llama"], root=tmp_path))
    other.merge(json.loads(json.dumps(exported)))
    assert len(other.records) == 3 and "planted-llama" in other.headers


def test_the_check_command_runs_specs_without_pytest(tmp_path, specs_dir, capsys):
    code = cli.main(["check", str(specs_dir), "--model", "planted-llama", "--report-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == 1 and re.search(r"^FAILED +planted-wrong-bound \[planted-llama\]", out, re.M)
    assert re.search(r"^PASSED +planted-dim ", out, re.M) and re.search(r"^XFAILED +planted-known-false ", out, re.M)
    assert "2/3 as expected" in out
    assert (tmp_path / "r" / "results.json").exists()
    (specs_dir / "planted.yaml").write_text(PLANTED_SPECS.split("---")[0])
    assert cli.main(["check", str(specs_dir), "--model", "planted-llama", "--report-dir", str(tmp_path / "r")]) == 0


def test_directory_defaults_apply_nearest_first_and_a_spec_wins(tmp_path):
    outer, inner = tmp_path / "specs", tmp_path / "specs" / "planted"
    inner.mkdir(parents=True)
    (outer / "_defaults.yaml").write_text("models: [m1]\ndata: {samples: 3}\n")
    (inner / "_defaults.yaml").write_text("models: [planted-llama]\ngolden: {rtol: 0.01}\n")
    (inner / "a.yaml").write_text(
        "id: a\nclaim: c\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n---\n"
        "id: b\nclaim: c\nmodels: any\ngolden: false\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n"
        "---\nid: c\nclaim: c\nxfail: known false\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n"
    )
    a, b, c = load_file(inner / "a.yaml")
    assert a.models == ("planted-llama",) and a.data.samples == 3 and a.golden.rtol == 0.01
    assert b.models is None and b.golden is None
    assert c.golden is not None  # expected failures are snapshotted too: their reasons' numbers stay checked
    assert load_file(inner / "_defaults.yaml") == []  # holds no spec


def test_data_options_override_a_spec_and_keep_whole(tmp_path):
    """--dataset/--samples/--seq-len override a spec's data; `whole: true` (a passage longer than
    seq_len is an error, not truncated) survives the override."""
    (tmp_path / "a.yaml").write_text(
        "id: a\nclaim: c\ndata: {samples: 3, seq_len: 20, whole: true}\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n"
    )
    (spec,) = load_file(tmp_path / "a.yaml")
    assert Suite(Options(models=["planted-llama"], root=tmp_path)).data_for(spec) == spec.data
    data = Suite(Options(models=["planted-llama"], root=tmp_path, samples=5)).data_for(spec)
    assert (data.samples, data.seq_len, data.whole) == (5, 20, True)


def test_a_bad_default_names_the_defaults_file(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "_defaults.yaml").write_text("models: [m1]\ngolden: {rtol: -1}\n")
    (folder / "a.yaml").write_text("id: a\nclaim: c\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n")
    with pytest.raises(SpecError) as info:
        load_file(folder / "a.yaml")
    assert info.value.path.endswith("_defaults.yaml") and info.value.line == 2 and info.value.key == "golden.rtol"
    (folder / "_defaults.yaml").write_text("claim: not a default\n")
    with pytest.raises(SpecError, match="unknown key"):
        load_file(folder / "a.yaml")


def test_the_plugin_does_not_collect_defaults_files(pytester):
    pytester.mkdir("specs")
    (pytester.path / "specs" / "_defaults.yaml").write_text("models: [planted-llama]\ndata: {samples: 4, seq_len: 32}\n")
    (pytester.path / "specs" / "one.yaml").write_text(
        f"id: one\nclaim: c\nchecks:\n  - {{measure: top1_dim, layers: {PLANT['layer']}, equals: {PLANT['dim']}}}\n"
    )
    result = pytester.runpytest("specs", "--model", "planted-llama", "--model", "tiny-opt", "--report-dir", "out")
    result.assert_outcomes(passed=1, deselected=1)


def test_defaults_outside_a_specs_directory_come_from_its_own_directory_only(tmp_path):
    (tmp_path / "_defaults.yaml").write_text("models: [m1]\n")  # a parent, with no `specs` directory between
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a.yaml").write_text("id: a\nclaim: c\nchecks:\n  - {measure: top1, at_least: 1.0e-6}\n")
    assert load_file(folder / "a.yaml")[0].models is None
    (folder / "_defaults.yaml").write_text("models: [m2]\n")
    assert load_file(folder / "a.yaml")[0].models == ("m2",)


def _run_planted(tmp_path, specs_dir, **options) -> Suite:
    suite = Suite(Options(models=["planted-llama"], root=tmp_path, **options))
    specs = [s for s in load_file(specs_dir / "planted.yaml") if s.applies_to("planted-llama")]
    for spec in specs:
        suite.plan(spec, "planted-llama")
    for spec in specs:
        suite.run(spec, "planted-llama")
    suite.finish()
    return suite


def test_figures_drawn_in_a_worker_process_are_those_drawn_inline(tmp_path, specs_dir):
    """--figure-workers 1: the passes go on while another process draws; the same PNG bytes, all
    present when the report is written (it embeds them)."""
    inline = _run_planted(tmp_path / "a", specs_dir, figure_workers=0)
    worker = _run_planted(tmp_path / "b", specs_dir, figure_workers=1)
    assert not inline.figure_errors and not worker.figure_errors
    pngs = sorted(p.relative_to(tmp_path / "a" / "reports") for p in (tmp_path / "a" / "reports").rglob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        assert (tmp_path / "a" / "reports" / png).read_bytes() == (tmp_path / "b" / "reports" / png).read_bytes()
    assert (tmp_path / "b" / "reports" / "index.html").read_text().count("<img ") == 3


def test_a_failed_figure_is_reported_never_a_verdict_and_leaves_no_stale_png(tmp_path, specs_dir, monkeypatch):
    from massive_checks.output import figures

    stale = tmp_path / "reports" / "planted-llama" / "planted-dim.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's figure")
    real_render = figures.render

    def render(observation, verdict, path):
        if observation.spec_id == "planted-dim":
            raise ValueError("no room for the legend")
        return real_render(observation, verdict, path)

    monkeypatch.setattr(figures, "render", render)
    suite = _run_planted(tmp_path, specs_dir, figure_workers=0)
    assert [r["spec"] for r in suite.figure_errors] == ["planted-dim"]
    assert suite.figure_errors[0]["figure_error"] == "ValueError: no room for the legend"
    assert suite.figure_errors[0]["status"] == "passed"  # its claim holds; only its figure failed
    assert not stale.exists()
    assert "figure failed: ValueError: no room for the legend" in (tmp_path / "reports" / "index.html").read_text()
    code = cli.main(["check", str(specs_dir), "--model", "planted-llama", "--report-dir", str(tmp_path / "r")])
    assert code == 1  # planted-wrong-bound's false claim, and the figure


def test_a_figure_a_worker_cannot_take_is_an_error_of_that_figure(tmp_path):
    """What a worker process fails on (here: an observation that does not pickle) comes back from
    wait() as that figure's error; the pool is shut down."""
    from massive_checks.output.figures import FigureQueue
    from massive_checks.output.records import Observation, Verdict

    observation = Observation(
        spec_id="s", claim="c", model="m", path="p", line=1, source="", notes="", profiles={"baseline": {}}, panels=[lambda: 0]
    )
    queue = FigureQueue(workers=1)
    queue.submit(observation, Verdict([]), tmp_path / "s.png")
    errors = queue.wait()
    assert list(errors) == [tmp_path / "s.png"] and "pickle" in errors[tmp_path / "s.png"].lower()
    assert queue._pool is None and queue.wait() == {}


def test_a_negative_figure_worker_count_is_a_clear_error(tmp_path, specs_dir, capsys):
    with pytest.raises(SystemExit) as exit_:  # the option's type refuses it, as the plugin's does
        cli.main(["check", str(specs_dir), "--model", "planted-llama", "--figure-workers", "-1"])
    assert exit_.value.code == 2 and "'-1': write a number (0: draw in this process) or auto" in capsys.readouterr().err


def test_check_takes_the_plugins_options_into_the_same_suite_options(tmp_path, specs_dir, pytester):
    """`massive-checks check` and the pytest plugin register one list of options (options.py) and
    build the suite's Options with one function (suite.options_from)."""
    from massive_checks.base.options import SUITE_OPTIONS
    from massive_checks.pipeline.suite import options_from

    argv = ["check", "specs", "--model", "m", "--golden-dir", "g", "--update-golden", "--batch-size", "4", "--samples", "3"]
    args = cli.build_parser().parse_args(argv + ["--judge-model", "j", "--resamples", "500", "--trust-remote-code"])
    options = options_from(lambda dest: getattr(args, dest), tmp_path)
    assert (options.models, options.golden_dir, options.update_golden, options.batch_size) == (["m"], "g", "all", 4)
    assert (options.samples, options.judge_model, options.resamples, options.trust_remote_code) == (3, "j", 500, True)
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    for dest in SUITE_OPTIONS:
        assert "--" + dest.replace("_", "-") in help_text, dest


def test_a_failed_figure_fails_the_pytest_run(pytester, monkeypatch):
    from massive_checks.output import figures

    pytester.mkdir("specs")
    (pytester.path / "specs" / "planted.yaml").write_text(PLANTED_SPECS.split("---")[0])
    monkeypatch.setattr(figures, "render", lambda *_: (_ for _ in ()).throw(OSError("disk full")))
    result = pytester.runpytest("specs", "--model", "planted-llama")
    result.assert_outcomes(passed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*figures that failed (verdicts unaffected)*", "*planted-dim [[]planted-llama[]]: OSError: disk full*"]
    )


def test_xdist_workers_share_the_cores(monkeypatch, tmp_path):
    """A worker runs torch on cores // busy workers threads (at least 1), takes an idle worker's
    cores before its next spec, and keeps a thread count the environment set."""
    import tempfile

    import torch

    from massive_checks.engine.cores import THREAD_VARIABLES, CoreShare, available_cores

    before, cores = torch.get_num_threads(), available_cores()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    try:
        suite = Suite(Options(models=["planted-llama"], figure_workers=0))
        suite.share_cores("run1", "gw0", 2)
        assert torch.get_num_threads() == max(1, cores // 2)
        assert suite.threads["gw0"].startswith(f"{max(1, cores // 2)} thread") and "(2 workers" in suite.threads["gw0"]
        other = CoreShare("run1", "gw1", 2)
        other.idle()  # gw1 has nothing left: gw0 takes its cores before its next spec
        suite.cores.rebalance()
        assert torch.get_num_threads() == cores
        other.rebalance()  # gw1 got more work: busy again, the cores are split again
        suite.cores.rebalance()
        assert torch.get_num_threads() == max(1, cores // 2)
        CoreShare("run2", "gw5", 10 * cores)
        assert torch.get_num_threads() == 1
        suite.cores.close()  # gw0 is done for good: gw1 takes its cores
        other.rebalance()
        assert torch.get_num_threads() == cores
        other.close()
        assert not (tmp_path / "massive_checks-cores-run1").exists()  # the last one out removes the directory
        torch.set_num_threads(before)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        fixed = CoreShare("run3", "gw0", 2)
        assert torch.get_num_threads() == before and "set by the environment" in fixed.describe()
        assert suite.export()["threads"] == suite.threads
    finally:
        torch.set_num_threads(before)
