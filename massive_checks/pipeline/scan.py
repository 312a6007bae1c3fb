"""Checkpoint scans: profile a new checkpoint, write a report, and draft a spec + golden that pin
what was found; and diffs of two checkpoints' massive activations."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from massive_checks.base.files import atomic_write
from massive_checks.engine import readings, stats
from massive_checks.engine.session import ModelSession
from massive_checks.language import interventions
from massive_checks.language.data import DataConfig
from massive_checks.language.intervals import value_of
from massive_checks.language.loading import load_file
from massive_checks.measures.massive import cells_panel
from massive_checks.measures.mlp import mlp_flow, mlp_stat
from massive_checks.measures.panels import AblationPanel, FlowPanel, HeadScoresPanel, ProfilePanel
from massive_checks.measures.profile import profile_document, top_cells
from massive_checks.output import figures, golden
from massive_checks.output.html import escape
from massive_checks.pipeline.evaluate import Evaluator


def profile_summary(session: ModelSession, data: DataConfig) -> dict:
    """Profile plus the derived facts a scan and a diff report."""
    view = session.view(data)
    doc = profile_document(view)
    massive_layers = sorted(layer for layer, dims in doc["massive_dims_per_layer"].items() if dims)
    doc["massive_dims"] = sorted({d for dims in doc["massive_dims_per_layer"].values() for d in dims})
    doc["massive_tokens"] = sorted({t for tokens in doc["massive_tokens_per_layer"].values() for t in tokens})
    doc["emergence_layer"] = massive_layers[0] if massive_layers else None
    doc["last_massive_layer"] = massive_layers[-1] if massive_layers else None
    return doc


def scan(model_name: str, lm, data: DataConfig, out: Path, progress: bool = True) -> dict:
    session = ModelSession(lm)
    steps = tqdm(total=6, desc=f"scan {model_name}", disable=not progress, unit="step")
    summary = profile_summary(session, data)
    steps.update()
    base = session.view(data)
    table = readings.head_score_table(base, "first")
    ranking = stats.rank_heads(table)
    summary["heads"] = {"top": [_head(table, lh) for lh in ranking[:5]], "bottom": [_head(table, lh) for lh in ranking[-5:]]}
    steps.update()
    ablated = {}
    for name, text in (("no_attn", "attn:all"), ("no_mlp", "mlp:all")):
        view = session.view(data, session.resolve(data, [interventions.parse(text)]))
        ablated[name] = [top_cells(view, L, 1)[0].value for L in range(lm.n_layers)]
        steps.update()
    base_top1 = [row["top"][0]["value"] for row in summary["layers"]]
    summary["ablation"] = {
        name: {"intervention": text, "top1": values, "change": [stats.relative_change(b, a) for b, a in zip(base_top1, values)]}
        for (name, values), text in zip(ablated.items(), ("attn:all", "mlp:all"))
    }
    emergence = summary["emergence_layer"]
    if emergence is not None:
        summary["mlp_flow"] = {c: value_of(mlp_stat(base, emergence, c, "max")) for c in mlp_flow(lm)}
        summary["explosion_point"] = stats.explosion_point(summary["mlp_flow"])
    steps.update()
    out.mkdir(parents=True, exist_ok=True)
    _write_figures(summary, base, table, out)
    spec_path = write_draft_spec(summary, model_name, data, out)
    _write_golden(spec_path, session, data, out)
    atomic_write(out / "scan.json", json.dumps(summary, indent=1))
    _write_page(summary, out, spec_path)
    steps.update()
    steps.close()
    return summary


def _head(table, layer_head) -> dict:
    layer, head = layer_head
    return {"layer": layer, "head": head, "score": float(table[layer, head])}


def _write_figures(summary: dict, base, table, out: Path) -> None:
    profile = {f"top{k + 1}": [row["top"][k]["value"] for row in summary["layers"]] for k in range(3)}
    profile["median"] = [row["median"] for row in summary["layers"]]
    model = summary["model"]
    figures.draw(
        [ProfilePanel(profile, f"{model}: layer-wise profile"), *cells_panel(base)],
        out / "profile.png",
        f"{model}: massive activation scan",
    )
    figures.draw([HeadScoresPanel(np.asarray(table))], out / "heads.png", f"{model}: head scores")
    observed = {"baseline": {"top1": profile["top1"]}, **{k: {"top1": v["top1"]} for k, v in summary["ablation"].items()}}
    figures.draw([AblationPanel(observed)], out / "ablation.png", f"{model}: attention vs MLP ablation")
    if "mlp_flow" in summary:
        layer = summary["emergence_layer"]
        figures.draw([FlowPanel({layer: summary["mlp_flow"]})], out / "mlp.png", f"{model}: MLP of block {layer}")


def write_draft_spec(summary: dict, model_name: str, data: DataConfig, out: Path) -> Path:
    """A spec pinning the scan's findings, with slack where values vary (top-1 at half): built as
    data and written as YAML, so any model name or dataset path is quoted as YAML needs."""
    import yaml

    spec_id = "scan-" + "".join(ch if ch.isalnum() else "-" for ch in model_name).strip("-")
    claim, checks = _draft_claim(summary, model_name)
    spec = {
        "id": spec_id,
        "models": [model_name],
        "data": {"dataset": data.dataset, "samples": data.samples, "seq_len": data.seq_len},
        "golden": True,
        "claim": claim,
        "checks": checks,
    }
    header = (
        f"# Drafted by `massive-checks scan {model_name}` on {datetime.date.today()}: review before\n"
        "# committing. Bounds pin what the scan found; top-1 gets 50% slack.\n"
    )
    path = out / "specs" / f"{spec_id}.yaml"
    atomic_write(path, header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=200))
    return path


def _draft_claim(summary: dict, model_name: str) -> tuple[str, list[dict]]:
    """The draft's claim and checks: where the massive activations are, when they emerge, how large."""
    first, last, dims = summary["emergence_layer"], summary["last_massive_layer"], summary["massive_dims"]
    if first is None:
        return f"{model_name} has no massive activations (|a| > 100 and >= 1000x the median) on this data.", [
            {"measure": "massive_dims", "equals": []}
        ]
    span = f"{first}-{last}"
    floor = float(f"{0.5 * min(summary['layers'][L]['top'][0]['value'] for L in range(first, last + 1)):.6g}")
    dominant = summary["layers"][first]["top"][0]["dim"]
    claim = (
        f"{model_name} has massive activations in dims {dims} at tokens {summary['massive_tokens']}, "
        f"emerging at block {first} and lasting to block {last}."
    )
    checks: list[dict] = [
        {"measure": "emergence_layer", "equals": first},
        {"measure": "massive_dims", "subset_of": list(dims)},
        {"measure": "massive_dims", "layers": first, "contains": [dominant]},
        {"measure": "massive_tokens", "subset_of": list(summary["massive_tokens"])},
        {"measure": "top1", "layers": span, "at_least": floor},
    ]
    if all(summary["layers"][L]["top"][0]["dim"] == dominant for L in range(first, last + 1)):
        checks.append({"measure": "top1_dim", "layers": span, "equals": dominant})
    return claim, checks


def _write_golden(spec_path: Path, session: ModelSession, data: DataConfig, out: Path) -> None:
    (spec,) = load_file(spec_path)
    observation, verdict = Evaluator(spec, session, data).evaluate()
    observation.path = str(spec_path)
    path = golden.golden_path(out / "golden", session.lm.name, spec.id)
    assert spec.golden is not None, f"{spec_path}: the scan's specs all keep goldens"
    golden.check(path, golden.snapshot_of(observation, verdict), spec.golden, update="all")


def _write_page(summary: dict, out: Path, spec_path: Path) -> None:
    rows = "".join(
        f"<tr><td>{r['layer']}</td><td>{r['top'][0]['value']:.4g}</td><td>{r['top'][0]['dim']}</td>"
        f"<td>{r['top'][0]['token']}</td><td>{r['median']:.4g}</td><td>{r['ratio']:.4g}</td></tr>"
        for r in summary["layers"]
    )
    images = "".join(
        f"<img src='{name}' style='max-width:100%'>"
        for name in ("profile.png", "heads.png", "ablation.png", "mlp.png")
        if (out / name).exists()
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>scan {escape(summary['model'])}</title></head>"
        f"<body style='font-family:sans-serif;margin:2em'><h1>Scan of {escape(summary['model'])}</h1>"
        f"<p>massive dims {summary['massive_dims']}, tokens {summary['massive_tokens']}, emerging at block "
        f"{summary['emergence_layer']}; MLP explosion point {summary.get('explosion_point', '-')}.</p>"
        f"<p>draft spec: {escape(spec_path)}</p>{images}<table border=1 cellpadding=3><tr><th>layer</th><th>top-1</th>"
        f"<th>dim</th><th>token</th><th>median</th><th>ratio</th></tr>{rows}</table></body></html>"
    )
    atomic_write(out / "index.html", page)


def diff(a: dict, b: dict) -> dict:
    """Compare two profile_summary() documents layer by layer."""
    layers = []
    for row_a, row_b in zip(a["layers"], b["layers"]):
        ta, tb = row_a["top"][0], row_b["top"][0]
        layers.append(
            {
                "layer": row_a["layer"],
                "top1_a": ta["value"],
                "top1_b": tb["value"],
                "change": stats.relative_change(ta["value"], tb["value"]),
                "dim_a": ta["dim"],
                "dim_b": tb["dim"],
            }
        )
    return {
        "a": a["model"],
        "b": b["model"],
        "layers": layers,
        "massive_dims": {
            "a": a["massive_dims"],
            "b": b["massive_dims"],
            "only_a": sorted(set(a["massive_dims"]) - set(b["massive_dims"])),
            "only_b": sorted(set(b["massive_dims"]) - set(a["massive_dims"])),
        },
        "massive_tokens": {"a": a["massive_tokens"], "b": b["massive_tokens"]},
        "emergence_layer": {"a": a["emergence_layer"], "b": b["emergence_layer"]},
        "n_layers": {"a": len(a["layers"]), "b": len(b["layers"])},
    }
