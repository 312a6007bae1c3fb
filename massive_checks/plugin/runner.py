"""The plugin's working half, imported only once a session runs specs (plugin/__init__.py decides):
collection of YAML specs into items parametrized by model, failure text, the hooks around one
suite.Suite, and the xdist parts that need it."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable

import pytest

from massive_checks.base.errors import MassiveChecksError, SpecError
from massive_checks.base.files import jsonable
from massive_checks.engine import notices
from massive_checks.language.loading import load_file
from massive_checks.language.objects import Spec
from massive_checks.output import golden, records, text
from massive_checks.pipeline.suite import Suite, options_from
from massive_checks.plugin import WORKER_KEY


def build(config) -> MassiveChecks:
    """The session's suite and its hooks, from the command line's options (registered by the caller)."""
    option = config.getoption
    suite = Suite(options_from(option, config.rootpath))
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: its share of the cores
        suite.share_cores(workerinput.get("testrunuid", "run"), workerinput["workerid"], int(workerinput.get("workercount", 1)))
    plugin = MassiveChecks(config, suite)
    plugin.notice = notice_writer(config)  # a first load's dequantization is announced, not minutes of silence
    notices.NOTICES.append(plugin.notice)
    return plugin


class Notice(UserWarning):
    """A first use's notice (dequantizing, its progress) from an xdist worker, which has no terminal:
    xdist carries warnings to the controller, which lists them in its warnings summary."""


def notice_writer(config) -> Callable[[str], None]:
    """Where notices go: pytest's terminal, past output capturing (with or without -s), or, on an
    xdist worker, a warning the controller shows."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if getattr(config, "workerinput", None) is not None or reporter is None:
        return lambda message: warnings.warn(Notice(f"massive_checks: {message}"), stacklevel=2)

    def write(message: str) -> None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.ensure_newline()
            reporter.write_line(f"massive_checks: {message}", yellow=True)

    return write


def _plugin(config) -> MassiveChecks:
    from massive_checks.plugin import active

    return active(config)


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
            for model in [spec.label] if spec.across else _plugin(self.config).suite.options.models:
                item = SpecItem.from_parent(self, name=f"{spec.id}[{model}]", spec=spec, model=model)
                item.add_marker(pytest.mark.massive_spec)
                if spec.generates_text():
                    item.add_marker(pytest.mark.massive_generates)
                # --dist loadgroup (see XdistHooks): one worker per model; across models, the first's
                item.add_marker(pytest.mark.xdist_group((spec.across or (model,))[0]))
                reason = spec.xfail_for(model)
                undecided = spec.inconclusive_for(model)
                if reason:  # a known-false claim must be contradicted; passing is reported as XPASS(strict)
                    item.add_marker(pytest.mark.xfail(reason=reason, strict=True, raises=ExpectedOutcome))
                elif undecided:
                    item.add_marker(
                        pytest.mark.xfail(reason=f"inconclusive as expected: {undecided}", strict=True, raises=ExpectedOutcome)
                    )
                yield item

    def repr_failure(self, excinfo):  # type: ignore[override]  # pytest's Collector narrows Node's signature too
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
        verdict, status = result.verdict, result.record["status"]
        if status in (records.PASSED, records.XPASSED):  # (XPASSED: the strict xfail mark fails it)
            return
        if status in (records.XFAILED, records.UNDECIDED):
            raise ExpectedOutcome(text.failure_text(result.observation, verdict))
        if verdict.as_expected and result.golden is not None:  # failed on its golden: the numbers its claim rests on moved
            lines = golden.mismatch_lines(result.golden, suite.update_command(self.spec, self.model))
            head = (
                f"{self.spec.id} on {self.model} is {verdict.outcome} as its spec says, but its golden snapshot does not match:"
            )
            raise GoldenMismatch("\n".join([head, *lines]))
        expected = verdict.xfail_reason or verdict.inconclusive_reason
        raise (UnexpectedOutcome if expected else SpecFailed)(text.failure_text(result.observation, verdict))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (SpecFailed, GoldenMismatch, ExpectedOutcome)):
            return excinfo.value.text
        if isinstance(excinfo.value, MassiveChecksError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, self.spec.line - 1, f"spec {self.spec.id} [{self.model}]"


class MassiveChecks:
    """pytest hooks around one Suite."""

    def __init__(self, config, suite: Suite):
        self.config, self.suite = config, suite
        self.deselected: dict[str, int] = {}
        self.across_deselected: list[str] = []  # specs across models deselected, with the reason
        self.collected_specs: dict[int, Spec] = {}  # id -> every collected spec, deselected ones too
        self.notice: Callable[[str], None] | None = None  # its writer in notices.NOTICES, removed when the session ends

    def pytest_unconfigure(self, config):
        if self.notice in notices.NOTICES:
            notices.NOTICES.remove(self.notice)

    def pytest_deselected(self, items):
        """Specs deselected (-k, -m, or not for this model) exist: their snapshots are no orphans."""
        self.collected_specs.update({id(i.spec): i.spec for i in items if isinstance(i, SpecItem)})

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        selected, deselected = [], []
        self.collected_specs.update({id(i.spec): i.spec for i in items if isinstance(i, SpecItem)})
        models = self.suite.options.models
        for item in items:
            if isinstance(item, SpecItem) and not item.spec.applies_to(item.model):
                deselected.append(item)
                self.deselected[item.model] = self.deselected.get(item.model, 0) + 1
                continue
            missing = [m for m in item.spec.across if m not in models] if isinstance(item, SpecItem) else []
            if missing:  # a spec across models runs when every model it names is a --model
                deselected.append(item)
                self.across_deselected.append(f"{item.spec.id}: reads {', '.join(missing)}, not among --model")
                continue
            selected.append(item)
            if isinstance(item, SpecItem):
                self.suite.plan(item.spec, item.model)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = selected

    def pytest_collection_finish(self, session):
        """The header line, once specs are known to run (the plugin wakes up during collection,
        after pytest's own header)."""
        import torch
        import transformers

        from massive_checks import __version__

        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        o = self.suite.options
        if reporter is not None and not hasattr(self.config, "workerinput"):
            reporter.write_line(
                f"massive_checks {__version__}: models {', '.join(o.models)}; device {o.device}; dtype "
                f"{o.dtype}; torch {torch.__version__}; transformers {transformers.__version__}; golden dir "
                f"{o.golden_dir}"
            )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        yield
        if nextitem is None and self.suite.cores is not None:  # nothing queued: let busy workers take the cores
            self.suite.cores.idle()

    def pytest_sessionfinish(self, session):
        worker = getattr(self.config, "workeroutput", None)
        if self.suite.cores is not None:
            self.suite.cores.close()
        if worker is not None:  # an xdist worker: its records travel to the controller on xdist's channel
            worker[WORKER_KEY] = json.dumps(self.suite.export(), default=jsonable)
            return
        self.suite.finish()
        if (self.suite.figure_errors or self.suite.report_error) and session.exitstatus == pytest.ExitCode.OK:
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
                loads, judging = suite.loads.get(name, 0), suite.judge_loads.get(name, 0)
                across = suite.across_loads.get(name, 0)
                judged = f" (and {judging} as a judge of steered text)" if judging else ""
                judged += f" (and {across} for a check across models)" if across else ""
                terminalreporter.line(
                    f"{name}: {d['architecture']}, revision {d['revision']}, {d['dtype']} on "
                    f"{d['device']}; loaded {loads} time{'s' * (loads != 1)}{judged}{passes}",
                    yellow=loads > 1,
                )
            for worker, threads in sorted(suite.threads.items()):
                terminalreporter.line(f"worker {worker}: {threads}")
            if any(count > 1 for count in suite.loads.values()):
                terminalreporter.line("a model loaded in several xdist workers: run with --dist loadgroup to load each once")
            for name, message in suite.unavailable.items():
                terminalreporter.line(f"{name}: NOT LOADED\n  {message}", red=True)
        if suite.report_error:
            terminalreporter.section("massive_checks: report not written")
            terminalreporter.line(suite.report_error, red=True)
        if self.across_deselected:
            terminalreporter.section("massive_checks: specs across models, deselected")
            for line in self.across_deselected:
                terminalreporter.line(line, yellow=True)
        if suite.figure_errors:
            terminalreporter.section("massive_checks: figures that failed (verdicts unaffected)")
            for record in suite.figure_errors:
                terminalreporter.line(f"{record['spec']} [{record['model']}]: {record['figure_error']}", red=True)
        orphans = suite.golden_orphans(list(self.collected_specs.values())) if self.collected_specs else []
        if orphans:
            terminalreporter.section("massive_checks: golden snapshots with no spec or model")
            for path in orphans:
                terminalreporter.line(f"{suite.relative(str(path))}  (delete it, or restore its spec)", yellow=True)
