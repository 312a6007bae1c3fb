"""Figures, one per (spec, model): explicit matplotlib Figure objects saved to PNG by the Agg
canvas, never through pyplot, so the user's matplotlib backend and pyplot state stay untouched.
render() lays out the panels (panels.py) a spec's measures returned."""

from __future__ import annotations

import io
import multiprocessing
import os
import textwrap
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from massive_checks.base.files import atomic_write
from massive_checks.measures.panels import AblationPanel, Panel, ProfilePanel, merged

METADATA = {"Software": "massive_checks", "Creation Time": None}  # deterministic PNG bytes


def new_figure(panels: list[Panel]):
    """A figure with each panel's axes side by side (a 3D panel's last axis in 3D)."""
    from matplotlib.figure import Figure

    count = sum(panel.axes for panel in panels)
    fig = Figure(figsize=(6.5 * count, 4.8))
    axes, at = [], 0
    for panel in panels:
        kinds = [None] * (panel.axes - 1) + ["3d" if panel.three_d else None]
        axes.append([fig.add_subplot(1, count, at + i + 1, projection=kind) for i, kind in enumerate(kinds)])
        at += panel.axes
    return fig, axes


def layout(observation) -> list[Panel]:
    """Every panel the spec's measures returned (merged by kind), after its layer profile where
    one of them asks for it or none was returned: per configuration (ablation lines and % change)
    when the spec compares some, else the baseline's."""
    drawn = merged(observation.panels)
    profiles = observation.profiles
    if observation.across:  # models of different depths: a profile each
        return [*(ProfilePanel(profiles[model], model) for model in observation.across), *drawn]
    if observation.changes or len(profiles) > 1:
        return [AblationPanel(profiles), *drawn]
    if not drawn or any(panel.with_profile for panel in drawn):
        return [ProfilePanel(profiles["baseline"]), *drawn]
    return drawn


def render(observation, verdict, path: Path) -> Path:
    """The figure for one spec on one model (records.Observation and Verdict)."""
    state = verdict.outcome.upper()  # HOLDS / CONTRADICTED / INCONCLUSIVE
    return draw(layout(observation), path, f"{observation.model} - {observation.spec_id} [{state}]\n{observation.claim}")


def draw(panels: list[Panel], path: Path, title: str) -> Path:
    """One figure of these panels side by side, saved to path."""
    fig, axes = new_figure(panels)
    for panel, its_axes in zip(panels, axes):
        panel.draw(its_axes, fig)
    return save(fig, path, title)


def save(fig, path: Path, title: str) -> Path:
    """Title (wrapped to the figure's width), save atomically (never a half-written PNG), close."""
    width, height = fig.get_size_inches()
    wrapped = "\n".join(textwrap.fill(line, int(width * 12)) for line in title.splitlines())  # ~12 characters per inch at 9 pt
    fig.suptitle(wrapped, fontsize=9)
    # Fixed margins in inches (room for tick labels, axis labels and the title's lines) instead of
    # tight_layout, whose extra layout draw was a quarter of a figure's time.
    title_inches = 0.45 + 0.16 * (wrapped.count("\n") + 1)
    fig.subplots_adjust(
        left=0.85 / width, right=1 - 0.45 / width, bottom=1.05 / height, top=1 - title_inches / height, wspace=0.3
    )
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90, metadata=METADATA)  # a bare Figure prints through Agg, whatever the backend
    atomic_write(path, png.getvalue())
    return path


def figure_workers(device: str) -> int:
    """auto: draw in the passes' process on the cpu (its cores run the passes); beside a GPU,
    in up to 4 worker processes (there the suite's figures took 58-66% of its time, serially)."""
    return 0 if device == "cpu" else min(4, max(1, (os.cpu_count() or 2) // 2))


class FigureQueue:
    """Draws figures in this process (workers=0) or in worker processes while the passes go on.
    A figure that fails never changes a verdict: wait() returns {path: error} for the report."""

    def __init__(self, workers: int = 0):
        if workers < 0:
            raise ValueError(f"figure workers: {workers}; write 0 (draw in this process) or more")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: dict[Path, Future] = {}
        self._errors: dict[Path, str] = {}

    def submit(self, observation, verdict, path: Path) -> None:
        if not self.workers:
            try:
                render(observation, verdict, path)
            except Exception as exc:  # noqa: BLE001  (reported by wait(), like a worker's)
                self._errors[path] = _describe(exc)
            return
        if self._pool is None:  # spawn: a forked child would inherit torch's threads and CUDA state
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        self._pending[path] = self._pool.submit(render, observation, verdict, path)

    def wait(self) -> dict[Path, str]:
        """Wait for every figure submitted; the errors since the last wait."""
        for path, future in self._pending.items():
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001
                self._errors[path] = _describe(exc)
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for path in self._errors:
            path.unlink(missing_ok=True)  # never leave an earlier run's figure in its place
        errors, self._errors = self._errors, {}
        return errors


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
