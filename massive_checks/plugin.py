"""pytest glue (the only module that imports pytest): options, collection of YAML specs into
items parametrized by model, shared model sessions, failure tables, results and summary."""

from __future__ import annotations

from pathlib import Path

import pytest

import json
import uuid

from . import figures, golden, models, report
from .data import DataConfig
from .errors import MassiveChecksError, ModelUnavailable, SpecError
from .run import Evaluator, ModelSession, Outcome
from .spec import Spec, load_file


def pytest_addoption(parser):
    group = parser.getgroup("massive_checks", "massive activation claim specs")
    group.addoption("--model", action="append", default=None, metavar="NAME",
                    help=f"model to run specs on (repeatable): a hub id, a local directory, a bundled model "
                         f"({', '.join(models.BUNDLED_GGUF)}) or a synthetic test model. Default: the bundled ones")
    group.addoption("--device", default="cpu", help="torch device (default cpu)")
    group.addoption("--dtype", default="float32", choices=sorted(models.DTYPES), help="model dtype")
    group.addoption("--dataset", default=None, help="text file (.txt one passage per line, .jsonl with 'text')")
    group.addoption("--samples", type=int, default=None, help="passages per spec (overrides specs)")
    group.addoption("--seq-len", type=int, default=None, help="tokens per passage (overrides specs)")
    group.addoption("--batch-size", type=int, default=8, help="sequences per forward chunk")
    group.addoption("--report-dir", default="reports", help="where results.json and reports go")
    group.addoption("--trust-remote-code", action="store_true", help="allow hub models' own code (off by default)")
    group.addoption("--allow-pickle", action="store_true", help="load pickle (*.bin) weights; safetensors only by default")
    group.addoption("--golden-dir", default="golden", help="where golden snapshots live (default golden/)")
    group.addoption("--update-golden", nargs="?", const="all", default=None, choices=("all", "new"),
                    help="rewrite missing and failing golden snapshots; =new: write missing ones only")


def pytest_configure(config):
    state = MassiveChecks(config)
    config.pluginmanager.register(state, "massive_checks_state")
    if config.pluginmanager.hasplugin("xdist"):  # its hooks exist only when it is installed and enabled
        config.pluginmanager.register(XdistHooks(state), "massive_checks_xdist")
    config.addinivalue_line("markers", "massive_spec: an item generated from a YAML claim spec")


def pytest_collect_file(file_path: Path, parent):
    # Spec files are YAML files inside a directory called `specs` (not any YAML in the tree).
    if file_path.suffix in (".yaml", ".yml") and "specs" in file_path.parts[:-1]:
        return SpecFile.from_parent(parent, path=file_path)
    return None


class SpecFailed(Exception):
    def __init__(self, outcome: Outcome, golden_lines: list[str] | None = None):
        self.outcome, self.golden_lines = outcome, golden_lines or []


class SpecFile(pytest.File):
    def collect(self):
        state: MassiveChecks = self.config.pluginmanager.get_plugin("massive_checks_state")
        for spec in load_file(self.path):
            for model in state.model_names:
                item = SpecItem.from_parent(self, name=f"{spec.id}[{model}]", spec=spec, model=model)
                item.add_marker(pytest.mark.massive_spec)
                item.add_marker(pytest.mark.xdist_group(model))  # --dist loadgroup: one worker per model
                reason = spec.xfail_for(model)
                if reason:  # a known-false claim must fail; passing is reported as XPASS(strict)
                    item.add_marker(pytest.mark.xfail(reason=reason, strict=True, raises=SpecFailed))
                yield item

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, SpecError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class SpecItem(pytest.Item):
    def __init__(self, *, spec: Spec, model: str, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.model = spec, model
        self.outcome: Outcome | None = None
        self.record: dict | None = None  # its entry in results.json

    def runtest(self):
        state: MassiveChecks = self.config.pluginmanager.get_plugin("massive_checks_state")
        session = state.session(self.model)
        data = state.data_for(self.spec)
        try:
            self.outcome = Evaluator(self.spec, session, data).evaluate()
        except MassiveChecksError as exc:  # numerics, model or spec problems: reported, never a verdict
            state.results.append(report.error_record(self.spec, self.model, state._relative(self.spec.path), exc))
            raise
        golden_result = state.compare_golden(self, session, data) if self.spec.golden and not self.spec.xfail_for(self.model) else None
        figure = state.render_figure(self)
        self.record = state.record(self, golden_result, figure)
        golden_failed = golden_result is not None and not golden_result.ok
        if not self.outcome.passed or golden_failed:
            lines = golden.mismatch_lines(golden_result, state.update_command(self)) if golden_failed else []
            raise SpecFailed(self.outcome, lines)

    def repr_failure(self, excinfo, style=None):
        error = excinfo.value
        if isinstance(error, SpecFailed):
            parts = [report.failure_text(error.outcome)] if not error.outcome.passed else \
                [f"claim holds on {self.model}, but its golden snapshot does not match: {self.spec.id}"]
            return "\n".join(parts + error.golden_lines)
        if isinstance(error, MassiveChecksError):
            return str(error)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, self.spec.line - 1, f"spec {self.spec.id} [{self.model}]"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def massive_session(request):
    """massive_session(name) -> ModelSession for a model, loaded once per test session."""
    state: MassiveChecks = request.config.pluginmanager.get_plugin("massive_checks_state")
    return state.session


@pytest.fixture
def ablate(massive_session):
    """Context manager applying interventions for the forward passes inside it:

        with ablate(lm, "heads:5.1,6.1", "mlp:2"):
            model(...)

    Mean-mode ablations take their means from `data` (default: the built-in text)."""
    from contextlib import contextmanager

    from . import hooks, interventions

    @contextmanager
    def apply(lm, *texts: str, data: DataConfig | None = None):
        session = ModelSession(lm)
        data = data or DataConfig()
        intervention = session.resolve(data, [interventions.parse(t) for t in texts])
        means = session.means(data, intervention)
        with hooks.intervene(lm, intervention, means):
            yield intervention

    return apply


@pytest.fixture
def capture_stats():
    """capture_stats(lm, sites, median_sites=()) -> hooks.capture context (see hooks.py)."""
    from . import hooks

    return hooks.capture


class MassiveChecks:
    """Session state: model sessions (loaded once), planned needs, recorded outcomes."""

    def __init__(self, config):
        self.config = config
        option = config.getoption
        self.model_names: list[str] = option("--model") or list(models.BUNDLED_GGUF)
        self.sessions: dict[str, ModelSession] = {}
        self.unavailable: dict[str, str] = {}
        self.planned: dict[str, list[Spec]] = {}
        self.results: list[dict] = []
        self.deselected: dict[str, int] = {}
        self.collected_specs: list[Spec] = []
        worker = getattr(config, "workerinput", None)
        self.run_id = worker["massive_checks_run"] if worker and "massive_checks_run" in worker else uuid.uuid4().hex[:12]

    def data_for(self, spec: Spec) -> DataConfig:
        option = self.config.getoption
        return DataConfig(option("--dataset") or spec.data.dataset, option("--samples") or spec.data.samples,
                          option("seq_len") or spec.data.seq_len)

    def session(self, name: str) -> ModelSession:
        if name in self.unavailable:
            raise ModelUnavailable(f"model {name!r} is unavailable (see 'massive_checks: models' in the summary)")
        if name not in self.sessions:
            option = self.config.getoption
            try:
                lm = models.load(name, option("--device"), option("--dtype"), option("trust_remote_code"), option("allow_pickle"))
            except MassiveChecksError as exc:
                self.unavailable[name] = str(exc)
                raise ModelUnavailable(f"model {name!r} could not be loaded: see 'massive_checks: models' below") from None
            session = ModelSession(lm, option("batch_size"))
            for spec in self.planned.get(name, []):
                try:
                    session.plan_spec(spec, self.data_for(spec))
                except (MassiveChecksError, ValueError):
                    pass  # this spec's own item reports it (validate_against_model); the others run
            self.sessions[name] = session
        return self.sessions[name]

    def report_dir(self) -> Path:
        return self.config.rootpath / self.config.getoption("report_dir")

    def render_figure(self, item: SpecItem) -> str:
        relative = Path(item.model.replace("/", "__")) / f"{item.spec.id}.png"
        figures.render(item.outcome, item.outcome.figure_data, self.report_dir() / relative)
        return str(relative)

    def record(self, item: SpecItem, golden_result=None, figure: str | None = None) -> dict:
        record = report.outcome_record(item.outcome, self.sessions[item.model].lm)
        record["figure"], record["path"] = figure, self._relative(item.spec.path)
        if golden_result is not None:
            record["golden"] = {"status": golden_result.status, "path": str(golden_result.path)}
        self.results.append(record)
        return record

    # -- goldens
    def golden_root(self) -> Path:
        return self.config.rootpath / self.config.getoption("golden_dir")

    def compare_golden(self, item: SpecItem, session: ModelSession, data: DataConfig):
        spec = item.spec
        meta = golden.metadata(session.lm, spec, data, session.batch(data).ids_hash, self._relative(spec.path))
        path = golden.golden_path(self.golden_root(), item.model, spec.id)
        return golden.check(path, golden.snapshot(item.outcome.values(), meta), spec.golden,
                            self.config.getoption("update_golden"))

    def update_command(self, item: SpecItem) -> str:
        return f"pytest {self._relative(item.spec.path)} --model {item.model} -k '{item.spec.id}' --update-golden"

    def _relative(self, path: str) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.config.rootpath))
        except ValueError:
            return str(path)

    def golden_orphans(self) -> list[Path]:
        live = {(spec.id, self._relative(spec.path)) for spec in self.collected_specs}
        files = {spec_file for _, spec_file in live}
        by_key = {(spec.id, self._relative(spec.path)): spec for spec in self.collected_specs}

        def applies(spec_file, spec_id, model):
            spec = by_key.get((spec_id, spec_file))
            return spec is not None and spec.applies_to(model)

        root = self.golden_root()
        return golden.orphans(root, files, live, applies, base=self.config.rootpath) if root.is_dir() else []

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        selected, deselected = [], []
        self.collected_specs = list({id(i.spec): i.spec for i in items if isinstance(i, SpecItem)}.values())
        for item in items:
            if isinstance(item, SpecItem) and not item.spec.applies_to(item.model):
                deselected.append(item)
                self.deselected[item.model] = self.deselected.get(item.model, 0) + 1
                continue
            selected.append(item)
            if isinstance(item, SpecItem):
                self.planned.setdefault(item.model, []).append(item.spec)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = selected

    def pytest_report_header(self, config):
        import torch
        import transformers

        from . import __version__

        return [f"massive_checks {__version__}: models {', '.join(self.model_names)}; device {config.getoption('device')}; "
                f"dtype {config.getoption('dtype')}; torch {torch.__version__}; transformers {transformers.__version__}; "
                f"golden dir {config.getoption('golden_dir')}"]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        result = yield
        test_report = result.get_result()
        if isinstance(item, SpecItem) and test_report.when == "call" and item.record is not None:
            item.record["status"] = _status(test_report)

    def pytest_sessionfinish(self, session):
        headers = {name: s.lm.describe() for name, s in self.sessions.items()}
        parts = self.report_dir() / ".parts" / self.run_id
        worker = getattr(self.config, "workerinput", None)
        if worker is not None:  # an xdist worker: leave a part for the controller
            if self.results or self.unavailable:
                document = {"results": self.results, "models": headers, "unavailable": self.unavailable}
                report.atomic_write(parts / f"{worker['workerid']}.json", json.dumps(document, default=report.jsonable))
            return
        results, unavailable = list(self.results), dict(self.unavailable)
        for part in sorted(parts.glob("*.json")) if parts.is_dir() else []:
            document = json.loads(part.read_text())
            results += document["results"]
            headers.update(document["models"])
            unavailable.update(document["unavailable"])
            part.unlink()
        if parts.is_dir():
            parts.rmdir()
        if results or unavailable:
            report.write_all(self.report_dir(), results, headers, unavailable)

    def pytest_terminal_summary(self, terminalreporter):
        idle = [name for name in self.deselected if name not in self.planned]
        if self.sessions or self.unavailable or idle:
            terminalreporter.section("massive_checks: models")
            for name in idle:
                terminalreporter.line(f"{name}: no spec applies ({self.deselected[name]} deselected)", yellow=True)
            for name, s in self.sessions.items():
                d = s.lm.describe()
                terminalreporter.line(f"{name}: {d['architecture']}, revision {d['revision']}, {d['dtype']} on "
                                      f"{d['device']}; {s.forward_passes} forward passes")
            for name, message in self.unavailable.items():
                terminalreporter.line(f"{name}: NOT LOADED\n  {message}", red=True)
        orphans = self.golden_orphans() if self.collected_specs else []
        if orphans:
            terminalreporter.section("massive_checks: golden snapshots with no spec or model")
            for path in orphans:
                terminalreporter.line(f"{self._relative(str(path))}  (delete it, or restore its spec)", yellow=True)


class XdistHooks:
    """pytest-xdist hooks, registered only when xdist is present (pytest rejects unknown hooks)."""

    def __init__(self, state: MassiveChecks):
        self.state = state

    def pytest_configure_node(self, node):  # controller -> each worker: one run id, one results file
        node.workerinput["massive_checks_run"] = self.state.run_id


def _status(test_report) -> str:
    if hasattr(test_report, "wasxfail"):
        return "xfailed" if test_report.skipped else "xpassed"
    return test_report.outcome
