"""Figures, one per (spec, model): explicit matplotlib Figure objects saved to PNG by the Agg
canvas, never through pyplot, so the user's matplotlib backend and pyplot state stay untouched.
Each plot_* draws on axes it is given; render() picks the views a spec needs."""

from __future__ import annotations

import io
import multiprocessing
import os
import textwrap
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .files import atomic_write

METADATA = {"Software": "massive_checks", "Creation Time": None}  # deterministic PNG bytes
PAPER_STATISTIC = "per sequence, mean over sequences"  # what observed profiles hold (records.STATISTIC_TEXT)


def _log_axes(ax, xlabel: str, ylabel: str, title: str, legend_size: int = 8) -> None:
    """The styling every log-scale line panel shares."""
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)


def plot_profile(ax, profile: dict, title: str = "") -> None:
    """profile: {"top1": [L], "top2": [L], "top3": [L], "median": [L]} of one configuration."""
    layers = np.arange(len(profile["top1"]))
    for key, style in (("top1", "o-"), ("top2", "s-"), ("top3", "^-"), ("median", "x--")):
        if key in profile:
            ax.plot(layers, profile[key], style, label=key.replace("top", "top-"), markersize=4)
    _log_axes(
        ax, "layer (block output, 0-based)", f"|activation| ({PAPER_STATISTIC})", title or "layer-wise top-1/2/3 and median |a|"
    )


def plot_cells_3d(ax, cells: np.ndarray, layer: int, dims: list[int]) -> None:
    """cells: [tokens, dims] max |a| over sequences at one layer (first few tokens)."""
    tokens, width = cells.shape
    t, d = np.meshgrid(np.arange(tokens), np.arange(width), indexing="ij")
    ax.bar3d(
        d.ravel(),
        t.ravel(),
        0,
        1.0,
        0.6,
        cells.ravel(),
        shade=False,
        color=np.where(np.isin(d.ravel(), dims), "tab:red", "tab:blue"),
    )
    ax.set_xlabel("dim")
    ax.set_ylabel("token position")
    ax.set_zlabel("max |a| over sequences")
    ax.set_title(f"|activation| at layer {layer}, massive dims {dims or 'none'} in red", fontsize=9)


def plot_head_scores(ax, table: np.ndarray, fig) -> None:
    """table: [layers, heads] mean attention to position 0."""
    image = ax.imshow(table, aspect="auto", cmap="viridis", vmin=0, vmax=max(1e-9, float(table.max())))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title("head score: mean attention to position 0 (queries q >= 1)")
    fig.colorbar(image, ax=ax, label="attention weight")


def plot_ablation(ax_lines, ax_heat, observed: dict, fig) -> None:
    """observed: configuration -> {"top1": [L], ...}; lines per configuration, % change heatmap
    against the baseline (or, for specs without one, the first configuration)."""
    reference = "baseline" if "baseline" in observed else next(iter(observed))
    base = np.asarray(observed[reference]["top1"])
    layers = np.arange(len(base))
    others = [name for name in observed if name != reference]
    ax_lines.plot(layers, base, "k-o", label=reference, markersize=4)
    for name in others:
        ax_lines.plot(layers, observed[name]["top1"], "-o", label=name, markersize=3)
    _log_axes(
        ax_lines, "layer", f"top-1 |activation| ({PAPER_STATISTIC})", f"top-1 per layer: {reference} vs the other configurations"
    )
    change = np.array([100 * (np.asarray(observed[n]["top1"]) - base) / np.where(base == 0, 1, base) for n in others])
    limit = max(1.0, float(np.abs(change).max())) if change.size else 1.0
    image = ax_heat.imshow(change, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax_heat.set_yticks(range(len(others)), others)
    ax_heat.set_xlabel("layer")
    ax_heat.set_title(f"% change of top-1 vs {reference}")
    fig.colorbar(image, ax=ax_heat, label="%")


def plot_mlp_flow(ax, flows: dict) -> None:
    """flows: layer -> {checkpoint: max |a|} in flow order."""
    for layer, flow in flows.items():
        names = list(flow)
        ax.plot(names, [flow[n] for n in names], "o-", label=f"layer {layer}")
    _log_axes(
        ax,
        "MLP checkpoint (in -> up/gate -> act -> down_in -> out)",
        "max |activation| (per sequence, mean over sequences)",
        "MLP checkpoint flow",
    )


def plot_cosines(ax, energy: dict, cosines: dict, fig) -> None:
    """cosines: {"a|b": cosine} between named vectors; a matrix (blank where not measured)."""
    names = sorted({n for pair in cosines for n in pair.split("|")} | set(energy))
    matrix = np.full((len(names), len(names)), np.nan)
    np.fill_diagonal(matrix, 1.0)
    for pair, value in cosines.items():
        a, b = pair.split("|")
        matrix[names.index(a), names.index(b)] = matrix[names.index(b), names.index(a)] = value
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6)
    ax.set_title("cosine between vectors")
    fig.colorbar(image, ax=ax, label="cosine")


def plot_energy(ax, energy: dict) -> None:
    """energy: vector -> {dim: share of its squared norm} for its dominant dims."""
    names = sorted(energy)
    dims = sorted({int(d) for shares in energy.values() for d in shares})
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        shares = {int(d): v for d, v in energy[name].items()}
        ax.bar(np.arange(len(dims)) + i * width, [shares.get(d, 0.0) for d in dims], width, label=name)
    ax.set_xticks(np.arange(len(dims)) + 0.4 - width / 2, [str(d) for d in dims], rotation=90, fontsize=7)
    ax.set_xlabel("dim (each vector's 8 largest |v_d|)")
    ax.set_ylabel("share of the vector's squared norm")
    ax.set_title("energy per dim")
    ax.legend(fontsize=7)


def plot_norms(ax, norms: dict) -> None:
    """norms: "pairs, window" -> {"with": [L], "without": [L]} mean activation norm per layer."""
    for label, series in norms.items():
        layers = np.arange(len(series["with"]))
        ax.plot(layers, series["with"], "o-", markersize=3, label=f"{label}: with massive dims")
        ax.plot(layers, series["without"], "x--", markersize=3, label=f"{label}: without")
    _log_axes(
        ax,
        "layer (block output, 0-based)",
        "mean norm of the window-pooled activation",
        "activation norm with and without the massive dims",
        legend_size=7,
    )


def plot_steering(ax_trait, ax_coherence, sweeps: dict) -> None:
    """sweeps: configuration -> {"coefs", "trait", "coherence" (0-100 per coef), "baseline_trait",
    "threshold", "calibrated": {name: coef}}; log x, the threshold and the calibrated starts drawn."""
    for i, (name, sweep) in enumerate(sweeps.items()):
        color = f"C{i % 10}"
        ax_trait.plot(sweep["coefs"], sweep["trait"], "o-", color=color, markersize=3, label=name)
        ax_trait.axhline(sweep["baseline_trait"], color=color, linestyle=":", linewidth=0.8)
        ax_coherence.plot(sweep["coefs"], sweep["coherence"], "o-", color=color, markersize=3, label=name)
    thresholds = {s["threshold"] for s in sweeps.values()}
    for threshold in thresholds:
        ax_coherence.axhline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    starts = {(label, round(coef, 6)) for s in sweeps.values() for label, coef in s["calibrated"].items()}
    for label, coef in sorted(starts):
        for ax in (ax_trait, ax_coherence):
            ax.axvline(
                coef,
                color="grey",
                linestyle="-." if label == "calibrated" else ":",
                linewidth=1,
                label=f"{label.replace('_', ' ')} {coef:.4g}" if ax is ax_coherence else None,
            )
    for ax, ylabel, title in (
        (ax_trait, "trait score (0-100; dotted: unsteered)", "trait vs coefficient"),
        (ax_coherence, "coherence (0-100)", "coherence vs coefficient"),
    ):
        ax.set_xscale("log")
        ax.set_ylim(-2, 102)
        ax.set_xlabel("coefficient (x unit vector)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)


def new_figure(panels: int, three_d: bool = False):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5 * panels, 4.8))
    axes = [fig.add_subplot(1, panels, i + 1, projection="3d" if three_d and i == panels - 1 else None) for i in range(panels)]
    return fig, axes


def render(observation, verdict, path: Path) -> Path:
    """The figure for one spec on one model (records.Observation and Verdict): the panels its
    measures asked for, or its layer profile (per configuration when it compares some)."""
    panels, profiles = observation.figure, observation.profiles
    if "steering" in panels:
        fig, (a, b) = new_figure(2)
        plot_steering(a, b, panels["steering"])
    elif "norms" in panels or "vector_energy" in panels:
        drawn = [name for name in ("norms", "vector_cosine", "vector_energy") if panels.get(name)]
        fig, axes = new_figure(len(drawn))
        for name, ax in zip(drawn, axes):
            {
                "norms": lambda: plot_norms(ax, panels["norms"]),
                "vector_cosine": lambda: plot_cosines(ax, panels.get("vector_energy", {}), panels["vector_cosine"], fig),
                "vector_energy": lambda: plot_energy(ax, panels["vector_energy"]),
            }[name]()
    elif "head_scores" in panels:
        fig, (ax,) = new_figure(1)
        plot_head_scores(ax, np.asarray(panels["head_scores"]), fig)
    elif observation.changes or len(profiles) > 1:
        fig, (a, b) = new_figure(2)
        plot_ablation(a, b, profiles, fig)
    elif "mlp" in panels:
        fig, (a, b) = new_figure(2)
        plot_mlp_flow(a, panels["mlp"])
        plot_profile(b, next(iter(profiles.values())))
    elif "cells" in panels:
        fig, (a, b) = new_figure(2, three_d=True)
        plot_profile(a, profiles["baseline"])
        plot_cells_3d(b, np.asarray(panels["cells"]), panels["cells_layer"], panels["massive_dims"])
    else:
        fig, (ax,) = new_figure(1)
        plot_profile(ax, profiles["baseline"])
    state = verdict.outcome.upper()  # HOLDS / CONTRADICTED / INCONCLUSIVE
    return save(fig, path, f"{observation.model} - {observation.spec_id} [{state}]\n{observation.claim}")


def save(fig, path: Path, title: str) -> Path:
    """Title (wrapped to the figure's width), save atomically (never a half-written PNG), close."""
    width = int(fig.get_figwidth() * 12)  # ~12 characters per inch at 9 pt
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.splitlines()), fontsize=9)
    fig.tight_layout()
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
