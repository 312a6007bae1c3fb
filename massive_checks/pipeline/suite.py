"""The session logic of a spec run, without pytest: models loaded once, every spec planned before
any pass, each spec evaluated into records, goldens compared, figures drawn, reports written.
The pytest plugin is glue around a Suite; the CLI and Python code can use one directly:

    suite = Suite(Options(models=["smollm2-135m"]))
    for spec in load_file("specs/smollm2/profile.yaml"):
        suite.plan(spec, "smollm2-135m")
    result = suite.run(spec, "smollm2-135m")   # SpecRun: observation, verdict, golden, record
    suite.finish()                              # reports/ (results.json, index.html, claims.md/tex)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from massive_checks.base.errors import MassiveChecksError, ModelUnavailable, first_line
from massive_checks.base.options import SUITE_OPTIONS, default
from massive_checks.engine import gguf_cache, models
from massive_checks.engine.cores import CoreShare
from massive_checks.engine.memory import out_of_memory
from massive_checks.engine.session import ModelSession
from massive_checks.language import intervals
from massive_checks.language.data import DataConfig
from massive_checks.language.objects import Spec
from massive_checks.output import figures, golden, report, results
from massive_checks.output.records import Observation, Verdict
from massive_checks.pipeline.evaluate import AcrossEvaluator, Evaluator, plan


@dataclass
class Options:
    """The suite's options; their defaults are base/options.py's (one declaration for pytest, the CLI and
    this)."""

    models: list[str] = field(default_factory=lambda: list(gguf_cache.BUNDLED_GGUF))
    device: str = default("device")
    dtype: str = default("dtype")
    trust_remote_code: bool = default("trust_remote_code")
    allow_pickle: bool = default("allow_pickle")
    device_map: str | None = default("device_map")  # e.g. "auto": accelerate spreads a large model over devices
    batch_size: int | None = default("batch_size")  # None: chosen per pass from free memory (session.rows_per_chunk)
    dataset: str | None = default("dataset")  # overrides every spec's data when set
    samples: int | None = default("samples")
    seq_len: int | None = default("seq_len")
    root: Path = Path(".")
    report_dir: str = default("report_dir")
    golden_dir: str = default("golden_dir")
    update_golden: str | None = default("update_golden")  # None | "all" | "new"
    figure_workers: int | None = default("figure_workers")  # processes drawing figures; None: figures.figure_workers(device)
    confidence: float = default("confidence")  # of every interval
    resamples: int = default("resamples")  # bootstrap resamples per set of sampling units
    judge_model: str | None = default("judge_model")  # steering's coherence judge; None: models.default_judge


def options_from(option: Callable[[str], Any], root: Path) -> Options:
    """Options from the values of options.SUITE_OPTIONS, read by dest (the plugin's getoption, the
    CLI's parsed arguments): one list of options for both ways to run specs."""
    values = {dest: option(dest) for dest in SUITE_OPTIONS}
    return Options(models=values.pop("model") or list(gguf_cache.BUNDLED_GGUF), root=root, **values)


@dataclass
class SpecRun:
    observation: Observation
    verdict: Verdict
    golden: golden.GoldenResult | None
    record: dict  # its entry in results.json


class Suite:
    def __init__(self, options: Options):
        self.options = options
        self.sessions: dict[str, ModelSession] = {}
        self.unavailable: dict[str, str] = {}
        self.planned: dict[str, list[Spec]] = {}
        self.records: list[dict] = []
        self.headers: dict[str, dict] = {}
        self.loads: dict[str, int] = {}  # model -> loads (summed over xdist workers: 1 each with --dist loadgroup)
        self.judge_loads: dict[str, int] = {}  # model -> loads first made to judge another model's text
        self.across_loads: dict[str, int] = {}  # model -> loads first made for a check across models
        self.threads: dict[str, str] = {}  # xdist worker -> how many torch threads it runs (share_cores)
        self.cores: CoreShare | None = None  # in an xdist worker: its share of the cores
        self.report_error: str | None = None  # why the report folder could not be written
        workers = options.figure_workers
        self.figures = figures.FigureQueue(figures.figure_workers(options.device) if workers is None else workers)

    # -- models and plans
    def data_for(self, spec: Spec) -> DataConfig:
        o = self.options
        data = spec.data
        # Every key the spec writes is kept (model_copy); the command line's options win.
        return data.model_copy(
            update={
                "dataset": o.dataset or data.dataset,
                "samples": o.samples or data.samples,
                "seq_len": o.seq_len or data.seq_len,
            }
        )

    def plan(self, spec: Spec, model: str) -> None:
        """Announce a spec before its model's passes run (all specs, before the first); a spec
        across models (model: its label) on each of its models."""
        for name in spec.across or (model,):
            self.planned.setdefault(name, []).append(spec)
            if name in self.sessions:
                self._plan_one(self.sessions[name], spec)

    def session(self, name: str, judge: bool = False, across: bool = False) -> ModelSession:
        """The session of a model, loaded once; `judge`: loaded to judge another model's steered
        text, `across`: for a check across models on another model's worker (each counted apart:
        with --dist loadgroup these are the only second loads)."""
        if name in self.unavailable:
            raise ModelUnavailable(f"model {name!r} is unavailable (see 'massive_checks: models' in the summary)")
        if name not in self.sessions:
            o = self.options
            try:
                lm = models.load(name, o.device, o.dtype, o.trust_remote_code, o.allow_pickle, o.device_map)
            except MassiveChecksError as exc:
                self.unavailable[name] = str(exc)
                raise ModelUnavailable(f"model {name!r} could not be loaded: see 'massive_checks: models' below") from None
            session = ModelSession(
                lm,
                o.batch_size,
                intervals.Bootstrap(o.resamples, o.confidence),
                judge_loader=lambda other: self.session(other, judge=True).lm,
                judge_model=o.judge_model,
            )
            for spec in self.planned.get(name, []):
                self._plan_one(session, spec)
            self.sessions[name] = session
            self.headers[name] = lm.describe()
            counts = self.judge_loads if judge else self.across_loads if across else self.loads
            counts[name] = counts.get(name, 0) + 1
        return self.sessions[name]

    def _plan_one(self, session: ModelSession, spec: Spec) -> None:
        """Plan a spec's captures once it is known to fit the model: a spec naming a block, head,
        dim or unit the model lacks plans nothing, so it cannot add captures its neighbours'
        passes would fail on; its own run reports the error."""
        data = self.data_for(spec)
        try:
            Evaluator(spec, session, data).validate_against_model()
            plan(spec, session, data)
        except (MassiveChecksError, ValueError):
            pass

    # -- one spec on one model
    def run(self, spec: Spec, model: str) -> SpecRun:
        """Observe, judge, compare with the golden, draw and record. Errors (numerics, model,
        spec) are recorded as such, never as a verdict, and raised."""
        xfail = spec.xfail_for(model)
        try:
            observation, verdict = self._evaluator(spec, model).evaluate()
        except MassiveChecksError as exc:
            self.records.append(
                results.error_record(self._header(spec, model), Verdict([], xfail, spec.inconclusive_for(model)), exc)
            )
            raise
        observation.path = self.relative(spec.path)
        golden_result = self._golden(spec, observation, verdict) if spec.golden else None
        record = results.outcome_record(observation, verdict, golden_result is None or golden_result.ok)
        record["figure"] = self._figure(observation, verdict)
        if golden_result is not None:
            record["golden"] = {"status": golden_result.status, "path": str(golden_result.path)}
        self.records.append(record)
        return SpecRun(observation, verdict, golden_result, record)

    def _evaluator(self, spec: Spec, model: str) -> Evaluator:
        """One model's, or for a spec across models (model: its label) one that loads each of them
        in this process (an xdist worker loads both)."""
        if spec.across:
            first = spec.across[0]  # its xdist group's model: the worker's own
            sessions = {name: self.session(name, across=name != first) for name in spec.across}
            return AcrossEvaluator(spec, sessions, self.data_for(spec))
        return Evaluator(spec, self.session(model), self.data_for(spec))

    def _header(self, spec: Spec, model: str) -> Observation:
        return Observation(
            spec_id=spec.id,
            claim=spec.claim,
            model=model,
            path=self.relative(spec.path),
            line=spec.line,
            source=spec.source,
            notes=spec.notes,
            confidence=self.options.confidence,
            claims=spec.claims,
        )

    def _golden(self, spec: Spec, observation: Observation, verdict: Verdict) -> golden.GoldenResult:
        path = golden.golden_path(self.golden_root(), observation.model, spec.id)
        document = golden.snapshot_of(observation, verdict)
        assert spec.golden is not None, "a golden check of a spec without golden"
        return golden.check(path, document, spec.golden, self.options.update_golden)

    def _figure(self, observation: Observation, verdict: Verdict) -> str:
        relative = Path(observation.model.replace("/", "__")) / f"{observation.spec_id}.png"
        self.figures.submit(observation, verdict, self.report_dir() / relative)
        return str(relative)

    def settle_figures(self) -> None:
        """Wait for the figures; a failed one is noted on its record (never on its verdict)."""
        errors = {str(path): error for path, error in self.figures.wait().items()}
        for record in self.records:
            error = errors.get(str(self.report_dir() / record.get("figure", "")))
            if error:
                record["figure_error"] = error

    @property
    def figure_errors(self) -> list[dict]:
        return [record for record in self.records if "figure_error" in record]

    def update_command(self, spec: Spec, model: str) -> str:
        return f"pytest {self.relative(spec.path)} --model {model} -k '{spec.id}' --update-golden"

    # -- places
    def report_dir(self) -> Path:
        return self.options.root / self.options.report_dir

    def golden_root(self) -> Path:
        return self.options.root / self.options.golden_dir

    def relative(self, path: str) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.options.root.resolve()))
        except ValueError:
            return str(path)

    def golden_orphans(self, specs: list[Spec]) -> list[Path]:
        by_key = {(spec.id, self.relative(spec.path)): spec for spec in specs}
        files = {spec_file for _, spec_file in by_key}

        def applies(spec_file, spec_id, model):
            spec = by_key.get((spec_id, spec_file))
            return spec is not None and spec.applies_to(model)

        root = self.golden_root()
        return golden.orphans(root, files, set(by_key), applies, base=self.options.root) if root.is_dir() else []

    # -- records across processes (pytest-xdist workers) and the reports
    def export(self) -> dict:
        """Plain data: what a worker sends its controller (its figures drawn)."""
        self.settle_figures()
        return {
            "results": self.records,
            "models": self.headers,
            "unavailable": self.unavailable,
            "loads": self.loads,
            "judge_loads": self.judge_loads,
            "across_loads": self.across_loads,
            "threads": self.threads,
        }

    def merge(self, exported: dict) -> None:
        self.records += exported.get("results", [])
        self.headers.update(exported.get("models", {}))
        self.unavailable.update(exported.get("unavailable", {}))
        for key in ("loads", "judge_loads", "across_loads"):
            counts = getattr(self, key)
            for name, count in exported.get(key, {}).items():
                counts[name] = counts.get(name, 0) + count
        self.threads.update(exported.get("threads", {}))

    def share_cores(self, run_id: str, worker: str, workers: int) -> None:
        """One of `workers` pytest-xdist processes: run torch on its share of the cores
        (cores.CoreShare), taking the cores of workers that are idle before each spec."""
        self.cores = CoreShare(run_id, worker, workers)
        self.threads[worker] = self.cores.describe()

    def finish(self) -> None:
        """The figures settled, then the report folder; a report that cannot be written is kept in
        `report_error` (the plugin fails the run with it; verdicts are unaffected)."""
        self.settle_figures()  # the report embeds them
        if self.records or self.unavailable:
            try:
                report.write_all(self.report_dir(), self.records, self.headers, self.unavailable)
            except MassiveChecksError as exc:
                self.report_error = str(exc)
            except Exception as exc:
                if not out_of_memory(exc):
                    raise
                self.report_error = f"out of memory writing the report in {self.report_dir()} ({first_line(exc)})"
