"""The spec suite on one model (default SmolLM2-135M, float32, CPU, one thread) against its floor: the model load plus,
for each forward pass the suite ran, one plain forward on the same data in the same chunks, run right after that pass (SDPA
attention with the LM head, as transformers runs by default; eager where the pass needs attention
weights, which SDPA cannot return).

Steering specs (steering.yaml) are left out: their time is generation and scoring, whose floor is
not a number of plain forwards."""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from pathlib import Path

import torch
from ratios import record, synchronize

from massive_checks.base.errors import MassiveChecksError
from massive_checks.engine import models
from massive_checks.engine.cores import available_cores
from massive_checks.engine.session import ModelSession
from massive_checks.language import load_file
from massive_checks.output import figures
from massive_checks.pipeline.suite import Options, Suite

ROOT = Path(__file__).resolve().parents[1]
SPEC_FILES = [path for path in sorted((ROOT / "specs").rglob("*.yaml")) if path.name not in ("_defaults.yaml", "steering.yaml")]


class PassLog:
    """Wraps ModelSession._forward: each pass's data and attention, and the time spent in passes
    (a pass that first runs the baseline for its means counts only its own time). With `floor`,
    each pass is followed at once by its floor, a plain forward of the same data timed by
    floor(session, data, eager, rows) -> seconds: pass and floor run seconds apart, so the
    machine's drift over a run (its speed moved by up to 1.5x between runs) cancels."""

    def __init__(self, floor=None):
        self.passes: list[tuple] = []  # (data, weights needed, rows per chunk)
        self.seconds, self._nested = 0.0, []
        self.floor, self.floor_seconds = floor, 0.0

    def wrap(self, forward):
        log = self

        def recorded(session, data, intervention, planned):
            log._nested.append(0.0)
            start = time.perf_counter()
            try:
                result = forward(session, data, intervention, planned)
            finally:
                elapsed = time.perf_counter() - start
                own = elapsed - log._nested.pop()
                log.seconds += own
                if log._nested:
                    log._nested[-1] += elapsed
            weights = any(name.endswith(".attn.probs") for name in result.needs.sites)
            rows = session.chunk_rows(session.batch(data).input_ids.shape[1], result.needs.loss, weights)
            log.passes.append((data, weights, rows))
            if log.floor is not None:
                spent = log.floor(session, data, weights, rows)
                log.floor_seconds += spent
                if log._nested:  # not the enclosing pass's own time either
                    log._nested[-1] += spent
            return result

        return recorded


def _run_suite(setup: dict, tmp: Path, log: PassLog, monkeypatch, figure_workers: int = 0) -> tuple[float, int, float]:
    """Wall time of the whole suite (load, plan, every spec with goldens and figures, reports);
    the time in figures is measured only where they are drawn in this process (figure_workers=0)."""
    shutil.copytree(ROOT / "golden", tmp / "golden")
    monkeypatch.setattr(ModelSession, "_forward", log.wrap(ModelSession._forward))
    figure_time = [0.0]
    render = figures.render

    def timed_render(*args, **kwargs):
        start = time.perf_counter()
        try:
            return render(*args, **kwargs)
        finally:
            figure_time[0] += time.perf_counter() - start

    monkeypatch.setattr(figures, "render", timed_render)
    start = time.perf_counter()
    name = setup["name"]
    suite = Suite(
        Options(
            models=[name],
            device=setup["device"],
            dtype=setup["dtype"],
            root=ROOT,
            report_dir=str(tmp / "reports"),
            golden_dir=str(tmp / "golden"),
            figure_workers=figure_workers,
        )
    )
    specs = [spec for path in SPEC_FILES for spec in load_file(path) if spec.applies_to(name)]
    for spec in specs:
        suite.plan(spec, name)
    for spec in specs:
        try:
            suite.run(spec, name)
        except MassiveChecksError:
            pass  # recorded as an error, like the plugin does
    suite.finish()
    return time.perf_counter() - start, len(specs), figure_time[0]


def _plain_forwards(session: ModelSession, data, eager: bool, batch_size: int) -> float:
    """Seconds of one plain forward of a pass's data on the session's model, in the pass's own chunks."""
    lm, batch = session.lm, session.batch(data)
    start = time.perf_counter()
    with torch.no_grad(), lm.attention(weights_needed=eager):
        for first in range(0, batch.input_ids.shape[0], batch_size):
            mask = batch.attention_mask[first : first + batch_size]
            width = int(mask.sum(dim=1).max())
            lm.model(
                input_ids=batch.input_ids[first : first + batch_size, :width].to(lm.device),
                attention_mask=mask[:, :width].to(lm.device),
                use_cache=False,
            )
        synchronize()
    return time.perf_counter() - start


def test_suite_vs_its_floor(benchmark, setup, lm, tmp_path, monkeypatch):  # lm: imports warm before the load is timed
    """The suite's wall time (its floors excluded) against the model load, timed just before it,
    plus each pass's plain forward, timed right after that pass."""
    log = PassLog(floor=_plain_forwards)
    start = time.perf_counter()
    models.load(**setup)
    load = time.perf_counter() - start
    suite_time, n_specs, figure_time = _run_suite(setup, tmp_path, log, monkeypatch)
    monkeypatch.undo()
    suite_time -= log.floor_seconds
    forwards = log.floor_seconds
    floor = load + forwards
    by_kind = defaultdict(int)
    for _, eager, _ in log.passes:
        by_kind["eager" if eager else "sdpa"] += 1
    record(
        f"spec suite vs its floor ({n_specs} specs, {len(log.passes)} passes: {dict(by_kind)}; "
        f"{suite_time:.1f} s vs {floor:.1f} s)",
        suite_time / floor,
        "target <= 1.15x",
    )
    record(
        f"  its passes vs their plain forwards (suite time: load {load / suite_time:.0%}, passes "
        f"{log.seconds / suite_time:.0%}, figures {figure_time / suite_time:.0%}, the rest "
        f"{(suite_time - log.seconds - figure_time - load) / suite_time:.0%})",
        log.seconds / forwards,
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


def test_suite_with_figures_in_worker_processes(benchmark, setup, lm, tmp_path, monkeypatch):
    """The suite's wall time with figures drawn by worker processes while the passes go on (the
    default beside a GPU; one worker on the cpu, where the passes run on one thread here) vs inline."""
    workers = figures.figure_workers(setup["device"]) or 1
    times = {}
    for count in (0, workers):
        times[count], *_ = _run_suite(setup, tmp_path / f"w{count}", PassLog(), monkeypatch, figure_workers=count)
        monkeypatch.undo()
    record(
        f"spec suite, figures in {workers} worker process{'es' * (workers > 1)} vs inline "
        f"({times[workers]:.1f} s vs {times[0]:.1f} s)",
        times[workers] / times[0],
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


class Stopwatch:
    """Time spent inside wrapped functions, outermost calls only (they call each other)."""

    def __init__(self):
        self.seconds, self._depth = 0.0, 0

    def wrap(self, fn):
        watch = self

        def timed(*args, **kwargs):
            watch._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                watch._depth -= 1
                if not watch._depth:
                    watch.seconds += time.perf_counter() - start

        return timed


def test_interval_share_of_the_suite(benchmark, setup, lm, tmp_path, monkeypatch):
    """The bootstrap's share of the whole suite (steering specs included): every function that
    draws resamples, computes replicates or intervals, or judges them, timed in place."""
    from massive_checks.language import intervals
    from massive_checks.measures import heads, sweeps
    from massive_checks.pipeline import evaluate
    from massive_checks.steering import vectors

    watch = Stopwatch()
    targets = [(intervals.Bootstrap, n) for n in ("weights", "mean", "total", "ratio_of_totals", "minimum")]
    targets += [
        (intervals, "combine"),
        (intervals.Estimate, "interval"),
        (evaluate, "judge"),
        (sweeps.SweepOutcome, "resampled"),
        (heads.HeadRank, "compute"),
    ]
    targets += [
        (vectors, n) for n in ("mean_diff_replicates", "probe_replicates", "clean_rows", "cosine_rows", "energy_share_rows")
    ]
    for owner, name in targets:
        monkeypatch.setattr(owner, name, watch.wrap(getattr(owner, name)))
    every = [path for path in sorted((ROOT / "specs").rglob("*.yaml")) if path.name != "_defaults.yaml"]
    monkeypatch.setattr(f"{__name__}.SPEC_FILES", every)
    suite_time, n_specs, _ = _run_suite(setup, tmp_path, PassLog(), monkeypatch)
    record(
        f"intervals' share of the spec suite ({n_specs} specs with steering; {watch.seconds:.2f} s of {suite_time:.1f} s)",
        watch.seconds / suite_time,
        "target <= 0.05",
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


PARALLEL_FILES = [f"specs/{model}/{kind}.yaml" for model in ("smollm2", "gemma3") for kind in ("profile", "ablations")]


def _pytest_run(tmp: Path, *extra: str) -> tuple[float, dict]:
    """Wall time of `pytest <profile and ablation specs of both bundled models>` in a fresh
    process, and its observations (spec, model) -> checks, from results.json."""
    import json
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "pytest",
        *PARALLEL_FILES,
        "--model",
        "smollm2-135m",
        "--model",
        "gemma3-270m",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:benchmark",
        "--report-dir",
        str(tmp),
        "--golden-dir",
        str(tmp / "golden"),
        *extra,
    ]
    shutil.copytree(ROOT / "golden", tmp / "golden")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-3000:]
    results = json.loads((tmp / "results.json").read_text())["results"]
    return elapsed, {(r["spec"], r["model"]): r["checks"] for r in results}


def test_xdist_workers_vs_one_process(benchmark, tmp_path):
    """`-n 2 --dist loadgroup` (each model's specs on one worker, each worker on its share of the
    cores) vs one process, on the profile and ablation specs of both bundled models; the
    observations must be identical."""
    serial, observed = _pytest_run(tmp_path / "serial")
    parallel, observed_parallel = _pytest_run(tmp_path / "parallel", "-n", "2", "--dist", "loadgroup")
    assert observed_parallel == observed
    record(
        f"-n 2 --dist loadgroup vs one process ({len(observed)} items, {available_cores()} cores; "
        f"{parallel:.1f} s vs {serial:.1f} s)",
        parallel / serial,
        "target <= 1.0x",
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
