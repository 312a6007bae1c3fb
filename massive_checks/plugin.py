"""pytest glue, the only module that imports pytest: options, collection of YAML specs into items
parametrized by model, failure text, xdist. The work is done by a suite.Suite."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from . import golden, intervals, models, report
from .errors import MassiveChecksError, SpecError
from .files import jsonable
from .spec import DEFAULTS_FILE, Spec, load_file
from .suite import Options, Suite

WORKER_KEY = "massive_checks"  # in xdist's workeroutput: a worker's records, sent to the controller


def pytest_addoption(parser):
    group = parser.getgroup("massive_checks", "massive activation claim specs")
    group.addoption("--model", action="append", default=None, metavar="NAME",
                    help=f"model to run specs on (repeatable): a hub id (NAME@REVISION for a branch, tag or commit), a "
                         f"local directory or .gguf file, a bundled model "
                         f"({', '.join(models.BUNDLED_GGUF)}) or a synthetic test model. Default: the bundled ones")
    group.addoption("--device", default="cpu", help="torch device (default cpu)")
    group.addoption("--dtype", default="float32", choices=sorted(models.DTYPES), help="model dtype")
    group.addoption("--device-map", default=None, choices=models.DEVICE_MAPS,
                    help="spread models larger than one device over all GPUs, with accelerate")
    group.addoption("--dataset", default=None, help="text file (.txt one passage per line, .jsonl with 'text')")
    group.addoption("--samples", type=int, default=None, help="passages per spec (overrides specs)")
    group.addoption("--seq-len", type=int, default=None, help="tokens per passage (overrides specs)")
    group.addoption("--batch-size", type=_count_or_auto(1, "a positive number"), default=None, metavar="N|auto",
                    help="sequences per forward chunk (default auto: what fits in half the free memory, at most 8 "
                         "on cpu and 64 on cuda)")
    group.addoption("--report-dir", default="reports", help="where results.json and reports go")
    group.addoption("--figure-workers", type=_count_or_auto(0, "a number (0: draw in this process)"), default=None,
                    metavar="N|auto", help="processes drawing figures while passes run (auto: 0 on the cpu, up to 4 beside a GPU)")
    group.addoption("--trust-remote-code", action="store_true", help="allow hub models' own code (off by default)")
    group.addoption("--allow-pickle", action="store_true", help="load pickle (*.bin) weights; safetensors only by default")
    group.addoption("--golden-dir", default="golden", help="where golden snapshots live (default golden/)")
    group.addoption("--update-golden", nargs="?", const="all", default=None, choices=("all", "new"),
                    help="rewrite missing and failing golden snapshots; =new: write missing ones only")
    group.addoption("--confidence", type=_share, default=intervals.CONFIDENCE, metavar="LEVEL",
                    help=f"confidence level of every interval (default {intervals.CONFIDENCE}): a check holds when its "
                         f"whole interval satisfies its bound")
    group.addoption("--resamples", type=_count_or_auto(100, "a whole number >= 100", auto=False), default=intervals.RESAMPLES,
                    metavar="N",
                    help=f"bootstrap resamples per set of sampling units (default {intervals.RESAMPLES})")
    group.addoption("--judge-model", default=None, metavar="NAME",
                    help="model judging steered text's fluency (coherence), unless a steering configuration names "
                         "its judge_model. Default: the other bundled model (a model never judges itself unless asked)")


def _share(text: str) -> float:
    """--confidence: a level strictly between 0.5 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.5 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write a level between 0.5 and 1, e.g. 0.95")
    return value


def _count_or_auto(least: int, wanted: str, auto: bool = True):
    """An option's type: a whole number >= least, or (with auto) auto: None, chosen at run time."""
    def parse(text: str) -> int | None:
        if auto and text == "auto":
            return None
        if not text.isdigit() or int(text) < least:
            raise argparse.ArgumentTypeError(f"{text!r}: write {wanted}{' or auto' if auto else ''}")
        return int(text)
    return parse


def pytest_configure(config):
    option = config.getoption
    suite = Suite(Options(
        models=option("--model") or list(models.BUNDLED_GGUF), device=option("--device"), dtype=option("--dtype"),
        trust_remote_code=option("trust_remote_code"), allow_pickle=option("allow_pickle"), device_map=option("device_map"),
        batch_size=option("batch_size"),
        dataset=option("dataset"), samples=option("samples"), seq_len=option("seq_len"), root=config.rootpath,
        report_dir=option("report_dir"), golden_dir=option("golden_dir"), update_golden=option("update_golden"),
        figure_workers=option("figure_workers"), confidence=option("confidence"),
        resamples=option("resamples"), judge_model=option("judge_model")))
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: its share of the cores
        suite.share_cores(workerinput.get("testrunuid", "run"), workerinput["workerid"], int(workerinput.get("workercount", 1)))
    plugin = MassiveChecks(config, suite)
    config.pluginmanager.register(plugin, "massive_checks_state")
    if config.pluginmanager.hasplugin("xdist"):  # its hooks exist only when it is installed and enabled
        config.pluginmanager.register(XdistHooks(plugin), "massive_checks_xdist")
    config.addinivalue_line("markers", "massive_spec: an item generated from a YAML claim spec")
    # Items carry xdist_group (one worker per model); without xdist installed the mark is still known.
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist --dist loadgroup group")


def pytest_collect_file(file_path: Path, parent):
    # Spec files are YAML files inside a directory called `specs` (not any YAML in the tree).
    if file_path.suffix in (".yaml", ".yml") and "specs" in file_path.parts[:-1] and file_path.name != DEFAULTS_FILE:
        return SpecFile.from_parent(parent, path=file_path)
    return None


def _plugin(config) -> "MassiveChecks":
    return config.pluginmanager.get_plugin("massive_checks_state")


class SpecFailed(Exception):
    """The spec's verdict is not `holds` (for an expected outcome: it is the expected one)."""

    def __init__(self, text: str):
        self.text = text


class UnexpectedOutcome(SpecFailed):
    """An expected failure that is not contradicted, or an expected-inconclusive claim that is
    now decided: a real failure even under the xfail mark (which only catches ExpectedOutcome)."""


class ExpectedOutcome(Exception):
    """The outcome the spec declares (contradicted for xfail, inconclusive): pytest's xfail."""

    def __init__(self, text: str):
        self.text = text


class GoldenMismatch(Exception):
    def __init__(self, text: str):
        self.text = text


class SpecFile(pytest.File):
    def collect(self):
        try:
            specs = load_file(self.path)
        except SpecError as exc:  # one failing item named after the file; every other spec still runs
            yield UnloadableSpecFile.from_parent(self, name=self.path.name, error=exc)
            return
        for spec in specs:
            for model in _plugin(self.config).suite.options.models:
                item = SpecItem.from_parent(self, name=f"{spec.id}[{model}]", spec=spec, model=model)
                item.add_marker(pytest.mark.massive_spec)
                item.add_marker(pytest.mark.xdist_group(model))  # --dist loadgroup (see XdistHooks): one worker per model
                reason = spec.xfail_for(model)
                undecided = spec.inconclusive_for(model)
                if reason:  # a known-false claim must be contradicted; passing is reported as XPASS(strict)
                    item.add_marker(pytest.mark.xfail(reason=reason, strict=True, raises=ExpectedOutcome))
                elif undecided:
                    item.add_marker(pytest.mark.xfail(reason=f"inconclusive as expected: {undecided}", strict=True,
                                                      raises=ExpectedOutcome))
                yield item

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, SpecError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class UnloadableSpecFile(pytest.Item):
    """A spec file that does not load: it fails as one item with its file:line message, instead
    of interrupting the whole run at collection."""

    def __init__(self, *, error: SpecError, **kwargs):
        super().__init__(**kwargs)
        self.error = error

    def runtest(self):
        raise self.error

    def repr_failure(self, excinfo, style=None):
        return str(excinfo.value)

    def reportinfo(self):
        return self.path, (self.error.line or 1) - 1, f"spec file {self.path.name} (does not load)"


class SpecItem(pytest.Item):
    def __init__(self, *, spec: Spec, model: str, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.model = spec, model
        self.record: dict | None = None  # its entry in results.json

    def runtest(self):
        suite = _plugin(self.config).suite
        if suite.cores is not None:  # an xdist worker: take the cores of idle workers
            suite.cores.rebalance()
        result = suite.run(self.spec, self.model)
        self.record = result.record
        verdict = result.verdict
        expected = verdict.xfail_reason or verdict.inconclusive_reason
        if verdict.as_expected and result.golden_failed:  # the numbers its claim or reason rests on moved
            lines = golden.mismatch_lines(result.golden, suite.update_command(self.spec, self.model))
            raise GoldenMismatch("\n".join([f"{self.spec.id} on {self.model} is {verdict.outcome} as its spec says, "
                                            f"but its golden snapshot does not match:", *lines]))
        if expected and verdict.as_expected:
            raise ExpectedOutcome(report.failure_text(result.observation, verdict))
        if expected and not (verdict.xfail_reason and verdict.passed):  # (a known-false claim that holds: XPASS)
            raise UnexpectedOutcome(report.failure_text(result.observation, verdict))
        if not expected and not verdict.passed:
            raise SpecFailed(report.failure_text(result.observation, verdict))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (SpecFailed, GoldenMismatch, ExpectedOutcome)):
            return excinfo.value.text
        if isinstance(excinfo.value, MassiveChecksError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, self.spec.line - 1, f"spec {self.spec.id} [{self.model}]"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def massive_session(request):
    """massive_session(name) -> session.ModelSession for a model, loaded once per test session."""
    return _plugin(request.config).suite.session


@pytest.fixture
def ablate():
    """Context manager applying interventions for the forward passes inside it:

        with ablate(lm, "heads:5.1,6.1", "mlp:2"):
            model(...)

    Mean-mode ablations take their means from `data` (default: the built-in text)."""
    from .apply import ablate as apply

    return apply


@pytest.fixture
def capture_stats():
    """capture_stats(lm, sites, median_sites=(), stop_early=False) -> context yielding {site: SiteStats} (see apply.py)."""
    from .apply import capture_stats as capture

    return capture


class MassiveChecks:
    """pytest hooks around one Suite."""

    def __init__(self, config, suite: Suite):
        self.config, self.suite = config, suite
        self.deselected: dict[str, int] = {}
        self.collected_specs: dict[int, Spec] = {}  # id -> every collected spec, deselected ones too

    def pytest_deselected(self, items):
        """Specs deselected (-k, -m, or not for this model) exist: their snapshots are no orphans."""
        self.collected_specs.update({id(i.spec): i.spec for i in items if isinstance(i, SpecItem)})

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        selected, deselected = [], []
        self.collected_specs.update({id(i.spec): i.spec for i in items if isinstance(i, SpecItem)})
        for item in items:
            if isinstance(item, SpecItem) and not item.spec.applies_to(item.model):
                deselected.append(item)
                self.deselected[item.model] = self.deselected.get(item.model, 0) + 1
                continue
            selected.append(item)
            if isinstance(item, SpecItem):
                self.suite.plan(item.spec, item.model)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = selected

    def pytest_report_header(self, config):
        import torch
        import transformers

        from . import __version__

        o = self.suite.options
        return [f"massive_checks {__version__}: models {', '.join(o.models)}; device {o.device}; dtype {o.dtype}; "
                f"torch {torch.__version__}; transformers {transformers.__version__}; golden dir {o.golden_dir}"]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        yield
        if nextitem is None and self.suite.cores is not None:  # nothing queued: let busy workers take the cores
            self.suite.cores.idle()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        result = yield
        test_report = result.get_result()
        if isinstance(item, SpecItem) and test_report.when == "call" and item.record is not None:
            item.record["status"] = _status(test_report)

    def pytest_sessionfinish(self, session):
        worker = getattr(self.config, "workeroutput", None)
        if self.suite.cores is not None:
            self.suite.cores.close()
        if worker is not None:  # an xdist worker: its records travel to the controller on xdist's channel
            worker[WORKER_KEY] = json.dumps(self.suite.export(), default=jsonable)
            return
        self.suite.finish()
        if self.suite.figure_errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a figure that failed is a failed run, not a verdict

    def pytest_terminal_summary(self, terminalreporter):
        suite = self.suite
        idle = [name for name in self.deselected if name not in suite.planned]
        if suite.headers or suite.unavailable or idle:
            terminalreporter.section("massive_checks: models")
            for name in idle:
                terminalreporter.line(f"{name}: no spec applies ({self.deselected[name]} deselected)", yellow=True)
            for name, d in suite.headers.items():
                session = suite.sessions.get(name)  # None on an xdist controller: its workers ran the passes
                passes = f"; {session.forward_passes} forward passes" if session else ""
                loads = suite.loads.get(name, 0)
                terminalreporter.line(f"{name}: {d['architecture']}, revision {d['revision']}, {d['dtype']} on "
                                      f"{d['device']}; loaded {loads} time{'s' * (loads != 1)}{passes}",
                                      yellow=loads > 1)
            for worker, threads in sorted(suite.threads.items()):
                terminalreporter.line(f"worker {worker}: {threads}")
            if any(count > 1 for count in suite.loads.values()):
                terminalreporter.line("a model loaded in several xdist workers: run with --dist loadgroup to load each once")
            for name, message in suite.unavailable.items():
                terminalreporter.line(f"{name}: NOT LOADED\n  {message}", red=True)
        if suite.figure_errors:
            terminalreporter.section("massive_checks: figures that failed (verdicts unaffected)")
            for record in suite.figure_errors:
                terminalreporter.line(f"{record['spec']} [{record['model']}]: {record['figure_error']}", red=True)
        orphans = suite.golden_orphans(list(self.collected_specs.values())) if self.collected_specs else []
        if orphans:
            terminalreporter.section("massive_checks: golden snapshots with no spec or model")
            for path in orphans:
                terminalreporter.line(f"{suite.relative(str(path))}  (delete it, or restore its spec)", yellow=True)


class XdistHooks:
    """pytest-xdist hooks, registered only when xdist is present (pytest rejects unknown hooks)."""

    def __init__(self, plugin: MassiveChecks):
        self.plugin = plugin

    def pytest_xdist_make_scheduler(self, config, log):
        """--dist loadgroup: each model's spec items go to one worker, which loads it once.
        xdist groups by a nodeid suffix that pytest >= 9.2 no longer lets it write
        (pytest-xdist#1386), so the group is read from the item's id, `<spec>[<model>]`."""
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadGroupScheduling

        class ByModel(LoadGroupScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return model_of_nodeid(nodeid) or super()._split_scope(nodeid)
        return ByModel(config, log)

    def pytest_testnodedown(self, node, error):  # controller: a worker finished; take its records
        exported = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if exported:
            self.plugin.suite.merge(json.loads(exported))


def model_of_nodeid(nodeid: str) -> str | None:
    """`specs/x.yaml::<spec id>[<model>]` -> the model; None for other items."""
    path, _, name = nodeid.partition("::")
    if not path.endswith((".yaml", ".yml")) or "[" not in name or not name.endswith("]"):
        return None
    return name[name.index("[") + 1:-1]


def _status(test_report) -> str:
    """passed, failed, xfailed (contradicted as expected), undecided (inconclusive as expected),
    xpassed (a known-false claim holds)."""
    if hasattr(test_report, "wasxfail"):
        if not test_report.skipped:
            return "xpassed"
        return "undecided" if test_report.wasxfail.startswith("inconclusive as expected") else "xfailed"
    return test_report.outcome

