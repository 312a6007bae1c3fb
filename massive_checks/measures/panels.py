"""Figure panels: what a measure draws, as plain data that draws itself on the axes it is given
(numpy only: matplotlib makes the axes, in figures.py). A measure's `figure()` returns panels;
panels of one kind from several checks merge into one (their entries joined), and figures.render
draws every panel a spec's measures returned, beside its layer profile where a panel asks for it.
A new figure is one Panel subclass: nothing else lists them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

PAPER_STATISTIC = "per sequence, mean over sequences"  # what observed profiles hold (records.STATISTIC_TEXT)


@dataclass(frozen=True)
class Panel:
    """One panel: `axes` axes side by side (the last one 3D where `three_d`), drawn by `draw`.
    `with_profile`: drawn after the spec's layer profile (activation panels), not alone."""

    axes: ClassVar[int] = 1
    three_d: ClassVar[bool] = False
    with_profile: ClassVar[bool] = False

    def merge(self, other: Panel) -> Panel:
        """The panel of two checks' entries of this kind: by default the first one's."""
        return self

    def draw(self, axes: list, fig: Any) -> None:
        raise NotImplementedError


def merged(panels) -> list[Panel]:
    """Panels of one kind merged into the first of their kind, in order of first appearance."""
    kinds: dict[type, Panel] = {}
    for panel in panels:
        kinds[type(panel)] = kinds[type(panel)].merge(panel) if type(panel) in kinds else panel
    return list(kinds.values())


def _joined(first: dict, second: dict) -> dict:
    """first's entries, then second's new ones (first wins where both have a key)."""
    return first | {key: value for key, value in second.items() if key not in first}


@dataclass(frozen=True)
class ProfilePanel(Panel):
    """profile: {"top1": [L], "top2": [L], "top3": [L], "median": [L]} of one configuration."""

    profile: dict
    title: str = ""

    def draw(self, axes, fig):
        plot_profile(axes[0], self.profile, self.title)


@dataclass(frozen=True)
class AblationPanel(Panel):
    """profiles: configuration -> {"top1": [L], ...}: lines per configuration and a % change heatmap."""

    profiles: dict
    axes: ClassVar[int] = 2

    def draw(self, axes, fig):
        plot_ablation(axes[0], axes[1], self.profiles, fig)


@dataclass(frozen=True)
class CellsPanel(Panel):
    """cells [tokens, F]: max |a| over sequences of the first tokens at `layer`; `dims` marked."""

    cells: np.ndarray
    layer: int
    dims: tuple[int, ...]
    three_d: ClassVar[bool] = True
    with_profile: ClassVar[bool] = True

    def draw(self, axes, fig):
        plot_cells_3d(axes[0], np.asarray(self.cells), self.layer, list(self.dims))


@dataclass(frozen=True)
class FlowPanel(Panel):
    """flows: layer -> {checkpoint: max |a|} in flow order (layers of several checks joined)."""

    flows: dict
    with_profile: ClassVar[bool] = True

    def merge(self, other):
        return replace(self, flows=_joined(self.flows, other.flows))

    def draw(self, axes, fig):
        plot_mlp_flow(axes[0], self.flows)


@dataclass(frozen=True)
class HeadScoresPanel(Panel):
    """table [layers, heads]: mean attention to position 0."""

    table: np.ndarray

    def draw(self, axes, fig):
        plot_head_scores(axes[0], np.asarray(self.table), fig)


@dataclass(frozen=True)
class NormsPanel(Panel):
    """norms: "pairs, window" -> {"with": [L], "without": [L]}."""

    norms: dict

    def merge(self, other):
        return replace(self, norms=_joined(self.norms, other.norms))

    def draw(self, axes, fig):
        plot_norms(axes[0], self.norms)


@dataclass(frozen=True)
class CosinePanel(Panel):
    """cosines: {"a|b": cosine} between the named vectors (blank where not measured)."""

    names: tuple[str, ...]
    cosines: dict

    def merge(self, other):
        names = tuple(sorted(set(self.names) | set(other.names)))
        return replace(self, names=names, cosines=_joined(self.cosines, other.cosines))

    def draw(self, axes, fig):
        plot_cosines(axes[0], self.names, self.cosines, fig)


@dataclass(frozen=True)
class EnergyPanel(Panel):
    """energy: vector -> {dim: share of its squared norm} for its dominant dims."""

    energy: dict

    def merge(self, other):
        return replace(self, energy=_joined(self.energy, other.energy))

    def draw(self, axes, fig):
        plot_energy(axes[0], self.energy)


@dataclass(frozen=True)
class SteeringPanel(Panel):
    """sweeps: configuration -> {"coefs", "trait", "coherence" (0-100 per coef), "baseline_trait",
    "threshold", "calibrated": {name: coef}, "cliff", "prompts"; a search's "stop" and "scored":
    its scored coefficients on the other prompts, {"coefs", "trait", "coherence", "prompts"}}."""

    sweeps: dict = field(default_factory=dict)
    axes: ClassVar[int] = 2

    def merge(self, other):
        return replace(self, sweeps=_joined(self.sweeps, other.sweeps))

    def draw(self, axes, fig):
        plot_steering(axes[0], axes[1], self.sweeps)


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
    from matplotlib.colors import to_rgba
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # type: ignore[import-untyped]

    t, d = np.meshgrid(np.arange(tokens), np.arange(width), indexing="ij")
    colors = np.where(np.isin(d.ravel(), dims)[:, None], to_rgba("tab:red"), to_rgba("tab:blue"))  # [bars, 4]
    # One collection with a float color array per face: ax.bar3d converts each face's color one
    # at a time (~0.45 s a figure at 8 x 576 cells).
    bars = Poly3DCollection(_box_faces(d.ravel(), t.ravel(), 1.0, 0.6, cells.ravel()), facecolors=np.repeat(colors, 6, axis=0))
    ax.add_collection3d(bars)
    ax.set_xlim(0, width)
    ax.set_ylim(0, tokens)
    ax.set_zlim(0, max(float(cells.max()), 1e-9))
    ax.set_xlabel("dim")
    ax.set_ylabel("token position")
    ax.set_zlabel("max |a| over sequences")
    ax.set_title(f"|activation| at layer {layer}, massive dims {dims or 'none'} in red", fontsize=9)


def _box_faces(x: np.ndarray, y: np.ndarray, dx: float, dy: float, heights: np.ndarray) -> np.ndarray:
    """[6 x bars, 4, 3]: the six faces (four corners each) of a box per bar, standing at (x, y) on
    z = 0, dx by dy wide and `heights` tall."""
    unit = np.array(
        [
            [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)],  # bottom
            [(0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)],  # top
            [(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)],  # front
            [(0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0)],  # back
            [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)],  # left
            [(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)],  # right
        ],
        dtype=np.float64,
    )  # [6, 4, 3]
    origin = np.stack([x, y, np.zeros_like(heights)], axis=-1).astype(np.float64)  # [bars, 3]
    size = np.stack([np.full_like(heights, dx), np.full_like(heights, dy), heights], axis=-1).astype(np.float64)
    return (origin[:, None, None, :] + size[:, None, None, :] * unit[None]).reshape(-1, 4, 3)


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


def plot_cosines(ax, vectors, cosines: dict, fig) -> None:
    """cosines: {"a|b": cosine} between named vectors; a matrix (blank where not measured)."""
    names = sorted({n for pair in cosines for n in pair.split("|")} | set(vectors))
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


def _scored_and_cliff(ax_trait, ax_coherence, name: str, sweep: dict, color: str) -> None:
    """A search's scored coefficients (stars, on the other prompts) and its cliff (a vertical line)."""
    scored = sweep.get("scored")
    if scored:
        label = f"{name} scored ({scored['prompts']} other prompts)"
        ax_trait.plot(scored["coefs"], scored["trait"], "*", color=color, markersize=9, label=label)
        ax_coherence.plot(scored["coefs"], scored["coherence"], "*", color=color, markersize=9, label=label)
    cliff = sweep.get("cliff")
    if cliff is not None and np.isfinite(cliff):
        for ax in (ax_trait, ax_coherence):
            ax.axvline(
                cliff,
                color=color,
                linestyle="--",
                linewidth=1.2,
                label=f"{name} cliff {cliff:.4g}" if ax is ax_coherence else None,
            )


def plot_steering(ax_trait, ax_coherence, sweeps: dict) -> None:
    """sweeps: configuration -> {"coefs", "trait", "coherence" (0-100 per coef), "baseline_trait",
    "threshold", "calibrated": {name: coef}}; log x, the threshold and the calibrated starts drawn."""
    for i, (name, sweep) in enumerate(sweeps.items()):
        color = f"C{i % 10}"
        label = f"{name} ({sweep['prompts']} prompts)" if "prompts" in sweep else name
        ax_trait.plot(sweep["coefs"], sweep["trait"], "o-", color=color, markersize=3, label=label)
        ax_trait.axhline(sweep["baseline_trait"], color=color, linestyle=":", linewidth=0.8)
        ax_coherence.plot(sweep["coefs"], sweep["coherence"], "o-", color=color, markersize=3, label=label)
        _scored_and_cliff(ax_trait, ax_coherence, name, sweep, color)
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
