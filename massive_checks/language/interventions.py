"""Interventions as data: parsing (`attn:all`, `heads:5.1,6.1`, `dims:447@all#0=mean`) and a
canonical form, so that identical configurations share one forward pass.

Grammar: TARGET:SELECTION[@LAYERS][#TOKENS][=MODE]
  attn:all | attn:2,3          whole attention output of these layers
  mlp:all | mlp:2-4            whole MLP output (down projection output)
  heads:5.1,6.1 | heads:2.* | heads:all | heads:top3 | heads:bottom3
                               heads (layer.head), applied to the output projection's *input*;
                               top/bottom k rank heads by attention to position 0
  dims:447@all | dims:507@2-10#0   residual dims after blocks @LAYERS, at tokens #TOKENS (default all)
  dims:507@11#massive          ... at the cells where that dim is massive in the baseline, found per
                               sequence from the data (the paper's rule); =mean there is the mean of
                               those massive values, not a position-wise mean
  neurons:11,12@1              MLP intermediate units (down projection input) of layers @LAYERS
  massive:all@2-5              every massive cell the baseline has after blocks @LAYERS, whatever its
                               dim (found per sequence by the rule; =mean: each dim's massive mean)
  weight:mlp.down@2[507,1204]  one entry of a block's parameter, indexed [OUT, IN] as in the math
  weight:norm.mlp@3[507]       (or [DIM] for a norm's scale); * selects a whole row or column:
  weight:attn.o@all[*,12]      PARAM is one of WEIGHT_PARAMS; only zero (default) and value:X;
                               restored exactly when the pass ends (engine/weights.py)
  MODE: zero (default) | mean (position-wise dataset mean) | bias (attn only: output = o_proj bias)
        | value:X (dims and weights only)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TARGETS = ("attn", "mlp", "heads", "dims", "neurons", "massive", "weight")
WEIGHT_PARAMS = (
    *("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.gate", "mlp.down"),
    *("norm.attn", "norm.mlp", "norm.attn_post", "norm.mlp_post"),  # the last two: Gemma 2/3's norms of the outputs
)
EVERY = -1  # a weight index written `*`: every entry along that axis
USER_TARGETS: dict[str, str] = {}  # a user's own targets (register_target): name -> the site suffix it edits


def register_target(name: str, site: str) -> None:
    """Add a target to the grammar: `NAME:UNITS@LAYERS[#TOKENS][=value:X]` edits the units (a comma
    list of indices, or `all`) of `site` (e.g. "out", "mlp.down_in") in those blocks; the engine's
    edit for it is registered beside it (massive_checks.api.register_intervention)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in TARGETS:
        raise ValueError(f"intervention target {name!r}: a lowercase name that is not built in ({', '.join(TARGETS)})")
    if name in USER_TARGETS and USER_TARGETS[name] != site:
        raise ValueError(f"intervention target {name!r} registered twice, at {USER_TARGETS[name]!r} and {site!r}")
    USER_TARGETS[name] = site
    TARGET_SITE[name] = site


MODES = ("zero", "mean", "bias", "value")
_WEIGHT = re.compile(r"^weight:(?P<param>[\w.]+)@(?P<layers>[^\[]+)\[(?P<index>[^\]]*)\](=(?P<mode>.+))?$")
_PATTERN = re.compile(r"^(?P<target>\w+):(?P<sel>[^@#=]+)(@(?P<layers>[^#=]+))?(#(?P<tokens>[^=]+))?(=(?P<mode>.+))?$")


@dataclass(frozen=True)
class Ablation:
    """One canonical intervention on one layer. `units` are heads, dims or neurons (empty for
    attn/mlp). `tokens` None means every position. `rows`, for `#massive`, gives the positions per
    dataset sequence instead (then `value` is what `mean` mode writes there). Weight edits name
    their `param` and `index` ([OUT, IN] or [DIM], EVERY for `*`)."""

    target: str
    layer: int
    units: tuple[int, ...] = ()
    tokens: tuple[int, ...] | None = None
    mode: str = "zero"
    value: float = 0.0
    rows: tuple[tuple[int, ...], ...] | None = None
    param: str = ""
    index: tuple[int, ...] = ()

    def label(self) -> str:
        if self.target == "weight":
            return f"weight:{self.param}@{self.layer}{_index_text(self.index)}" + _where_and_mode(
                None, None, self.mode, self.value
            )
        units = ",".join(map(str, self.units))
        text = f"{self.target}:{self.layer}" + (f"[{units}]" if units else "")
        return text + _where_and_mode(self.tokens, self.rows, self.mode, self.value)


Intervention = tuple[Ablation, ...]  # sorted and merged: the canonical, hashable key
BASELINE: Intervention = ()
HeadRanking = Sequence[tuple[int, int]]  # (layer, head), best first
# (layers, dims or None: every dim) -> {(layer, dim): (positions per sequence, mean signed value there)}
MassiveCells = Callable[[list[int], "list[int] | None"], dict[tuple[int, int], tuple[tuple[tuple[int, ...], ...], float]]]


@dataclass(frozen=True)
class Request:
    """A parsed but not yet resolved intervention string (`all`, `top3` need the model)."""

    text: str
    target: str
    selection: str
    layers: str | None
    tokens: str | None
    mode: str
    value: float
    blocks: LayerSet | None = None  # the blocks it edits, parsed once: @LAYERS, or attn/mlp's selection (None: heads)
    index: tuple[int, ...] = ()  # weights: [OUT, IN] or [DIM], EVERY for `*`

    @property
    def at_massive_cells(self) -> bool:
        """`#massive` and `massive:all`: edits at the cells the baseline's massive rule finds."""
        return self.tokens == "massive" or self.target == "massive"


def parse(text: str) -> Request:
    if text.strip().startswith("weight:"):
        return _parse_weight(text)
    match = _PATTERN.match(text.strip().replace(" ", ""))
    if not match:
        raise ValueError(f"cannot parse intervention {text!r}: expected TARGET:SELECTION[@LAYERS][#TOKENS][=MODE]")
    target, mode_text = match["target"], match["mode"] or "zero"
    if match["tokens"] == "massive" and target != "dims":
        raise ValueError(f"intervention {text!r}: #massive applies to dims only")
    if target == "massive" and (match["sel"] != "all" or match["tokens"]):
        raise ValueError(f"intervention {text!r}: expected massive:all@LAYERS[=MODE]")
    user = target in USER_TARGETS
    if target not in TARGETS and not user:
        raise ValueError(f"intervention {text!r}: target {target!r} is not one of {', '.join((*TARGETS, *USER_TARGETS))}")
    mode, _, value = mode_text.partition(":")
    if mode not in MODES:
        raise ValueError(f"intervention {text!r}: mode {mode!r} is not one of {', '.join(MODES)}")
    if (mode == "bias" and target != "attn") or (mode == "value" and target not in ("dims", "massive") and not user):
        raise ValueError(f"intervention {text!r}: mode {mode!r} does not apply to {target}")
    if (target in ("dims", "neurons", "massive") or user) and not match["layers"]:
        raise ValueError(f"intervention {text!r}: {target} need @LAYERS, e.g. {target}:{match['sel']}@all")
    if target in ("attn", "mlp", "heads") and match["layers"]:
        raise ValueError(
            f"intervention {text!r}: {target} takes its layers from its selection ({target}:2,3 or "
            f"{'heads:5.1' if target == 'heads' else target + ':2-4'}), not from @{match['layers']}"
        )
    if target in ("attn", "mlp") and match["tokens"]:
        raise ValueError(
            f"intervention {text!r}: #{match['tokens']} does not apply to {target} (its whole output is "
            f"replaced); heads, dims and neurons take #TOKENS"
        )
    if target in ("dims", "neurons") or (user and match["sel"] != "all"):
        _ints(match["sel"], text)
    if target == "heads":
        _check_heads(match["sel"], text)
    if match["tokens"] not in (None, "all", "massive"):
        _ints(match["tokens"], text)
    number = _value(value, text) if mode == "value" else 0.0
    written = match["sel"] if target in ("attn", "mlp") else match["layers"]
    blocks = None if target == "heads" else LayerSet.parse(written)  # syntax and order; the model's depth comes later
    return Request(text, target, match["sel"], match["layers"], match["tokens"], mode, number, blocks)


def _parse_weight(text: str) -> Request:
    """weight:PARAM@LAYERS[OUT,IN] or [DIM], with =value:X or zero."""
    match = _WEIGHT.match(text.strip().replace(" ", ""))
    if not match:
        raise ValueError(f"cannot parse intervention {text!r}: expected weight:PARAM@LAYERS[OUT,IN] or weight:PARAM@LAYERS[DIM]")
    if match["param"] not in WEIGHT_PARAMS:
        raise ValueError(f"intervention {text!r}: parameter {match['param']!r} is not one of {', '.join(WEIGHT_PARAMS)}")
    parts = match["index"].split(",")
    if len(parts) not in (1, 2) or not all(p == "*" or (p.isdigit() and p.isascii()) for p in parts):
        raise ValueError(f"intervention {text!r}: [{match['index']}] is not [OUT,IN] or [DIM] (integers >= 0, or *)")
    if match["param"].startswith("norm.") != (len(parts) == 1):
        raise ValueError(
            f"intervention {text!r}: {match['param']} is a {'vector: [DIM]' if len(parts) == 2 else 'matrix: [OUT,IN]'}"
        )
    mode, _, value = (match["mode"] or "zero").partition(":")
    if mode not in ("zero", "value"):
        raise ValueError(f"intervention {text!r}: a weight takes =zero (the default) or =value:X, not ={mode}")
    number = _value(value, text) if mode == "value" else 0.0
    index = tuple(EVERY if p == "*" else int(p) for p in parts)
    return Request(text, "weight", match["param"], match["layers"], None, mode, number, LayerSet.parse(match["layers"]), index)


def _index_text(index: Sequence[int]) -> str:
    return "[" + ",".join("*" if i == EVERY else str(i) for i in index) + "]"


def _check_heads(selection: str, text: str) -> None:
    """heads:all, heads:topN / bottomN (N >= 1), or LAYER.HEAD items (HEAD a number or *)."""
    ranked = re.fullmatch(r"(top|bottom)(\d+)", selection)
    if ranked and int(ranked[2]) < 1:
        raise ValueError(f"intervention {text!r}: {ranked[1]}{ranked[2]} selects no head (at least 1)")
    if selection == "all" or ranked:
        return
    for item in selection.split(","):
        layer_text, dot, head_text = item.partition(".")
        if not dot:
            raise ValueError(f"intervention {text!r}: {item!r} is not LAYER.HEAD (e.g. heads:5.1,6.*)")
        LayerSet.parse(layer_text)  # syntax and order; the model's depth comes later
        if head_text != "*":
            _ints(head_text, text)


def _value(value: str, text: str) -> float:
    """=value:X's X: a finite float32 number."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"intervention {text!r}: value {value!r} is not a number") from None
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise ValueError(f"intervention {text!r}: value {value!r} is not a finite float32 number (|x| <= {FLOAT32_MAX:.4g})")
    return number


MAX_LAYERS = 10_000  # no model has more blocks; bounds a hostile range before it is built
FLOAT32_MAX = 3.4028234663852886e38  # the largest value an activation can be set to


@dataclass(frozen=True)
class LayerSet:
    """Blocks as a spec writes them, parsed once: 'all' | 'L' | 'A-B' | a comma list of those
    (0-based, inclusive ranges). `text` as written (keys, reports); `spans` [(low, high)], None
    for every block. Its blocks need the model's depth (`blocks`)."""

    text: str
    spans: tuple[tuple[int, int], ...] | None

    @classmethod
    def parse(cls, text: str | None) -> LayerSet:
        """Syntax and order; a block past MAX_LAYERS is an error (the model's depth comes later)."""
        if text is None:
            raise ValueError("layers: missing (write 'all', 'L', 'A-B' or a comma list of those)")
        text = str(text)
        if text == "all":
            return cls(text, None)
        spans: list[tuple[int, int]] = []
        for part in text.split(","):
            low_text, _, high_text = part.strip().partition("-")
            if not (low_text.isdigit() and (high_text.isdigit() or not high_text)):
                raise ValueError(f"layers {text!r}: expected 'all', 'L', 'A-B' or a comma list of those")
            low, high = int(low_text), int(high_text or low_text)
            if high < low:
                raise ValueError(f"layers {text!r}: {low}-{high} is an empty range (write the lower block first)")
            if high >= MAX_LAYERS:
                raise ValueError(f"layers {text!r}: block {high} is out of range for {MAX_LAYERS} blocks")
            spans.append((low, high))
        return cls(text, tuple(spans))

    def blocks(self, n_layers: int) -> list[int]:
        """The sorted blocks of a model with n_layers blocks (a block past them is an error)."""
        if self.spans is None:
            return list(range(n_layers))
        past = [high for _, high in self.spans if high >= n_layers]
        if past:
            high = past[0]
            raise ValueError(
                f"layers {self.text!r}: block {high} is out of range for a model with {n_layers} blocks (0-{n_layers - 1})"
            )
        return sorted({layer for low, high in self.spans for layer in range(low, high + 1)})


EVERY_LAYER = LayerSet("all", None)


def resolve(
    requests: list[Request],
    n_layers: int,
    n_heads: int,
    head_ranking: HeadRanking | None = None,
    massive_cells: MassiveCells | None = None,
) -> Intervention:
    """Requests -> canonical Intervention. head_ranking: [(layer, head)] best first, for top/bottom.
    massive_cells: where the massive cells are, for #massive and massive:all: (layers, dims) ->
    {(layer, dim): (positions per sequence, mean signed value there)} in the baseline."""
    ablations: list[Ablation] = []
    for request in requests:
        ablations.extend(_resolve_one(request, n_layers, n_heads, head_ranking, massive_cells))
    return canonical(ablations)


def _resolve_one(
    request: Request, n_layers: int, n_heads: int, head_ranking: HeadRanking | None, massive_cells: MassiveCells | None
) -> list[Ablation]:
    if request.at_massive_cells:
        return _at_massive_cells(request, n_layers, massive_cells)
    tokens = None if request.tokens in (None, "all") else tuple(_ints(request.tokens, request.text))

    def make(layer: int, units: Sequence[int] = ()) -> Ablation:
        return Ablation(request.target, layer, tuple(units), tokens, request.mode, request.value)

    if request.target == "weight":
        return [
            Ablation("weight", layer, mode=request.mode, value=request.value, param=request.selection, index=request.index)
            for layer in _blocks(request, n_layers)
        ]
    if request.target in ("attn", "mlp"):
        return [make(layer) for layer in _blocks(request, n_layers)]
    if request.target == "heads":
        return [make(layer, [head]) for layer, head in _heads(request, n_layers, n_heads, head_ranking)]
    units = () if request.selection == "all" else _ints(request.selection, request.text)  # a user target's all: every unit
    return [make(layer, units) for layer in _blocks(request, n_layers)]


def _at_massive_cells(request: Request, n_layers: int, massive_cells: MassiveCells | None) -> list[Ablation]:
    """One ablation per (layer, dim), at the positions where that dim is massive per sequence."""
    if massive_cells is None:
        raise ValueError(f"intervention {request.text!r} needs the baseline's massive cells")
    layers = _blocks(request, n_layers)
    dims = None if request.target == "massive" else _ints(request.selection, request.text)
    ablations = []
    for (layer, dim), (rows, mean) in massive_cells(layers, dims).items():
        value = mean if request.mode == "mean" else request.value
        ablations.append(Ablation("dims", layer, (dim,), None, request.mode, value, rows))
    return ablations


def check_against_model(requests: list[Request], n_layers: int, n_heads: int, mlp_width: int) -> None:
    """ValueError naming what a model lacks (layers, heads, MLP units), before anything runs."""
    every_head = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    for request in requests:
        if request.target == "heads":
            _heads(request, n_layers, n_heads, every_head)
        else:
            _blocks(request, n_layers)
        if request.target == "neurons":
            bad = [u for u in _ints(request.selection, request.text) if u >= mlp_width]
            if bad:
                raise ValueError(f"intervention {request.text!r}: units {bad} out of range (the MLP has {mlp_width})")


def _blocks(request: Request, n_layers: int) -> list[int]:
    """The blocks a request of a target other than heads edits, on a model of n_layers blocks."""
    assert request.blocks is not None, f"intervention {request.text!r} has no layers of its own"
    return request.blocks.blocks(n_layers)


def _heads(request: Request, n_layers: int, n_heads: int, head_ranking: HeadRanking | None) -> list[tuple[int, int]]:
    selection = request.selection
    ranked = re.fullmatch(r"(top|bottom)(\d+)", selection)
    if ranked:
        if head_ranking is None:
            raise ValueError(f"intervention {request.text!r} needs head scores")
        k = int(ranked[2])
        return list(head_ranking[:k] if ranked[1] == "top" else head_ranking[-k:])
    if selection == "all":
        return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    pairs: list[tuple[int, int]] = []
    for item in selection.split(","):
        layer_text, _, head_text = item.partition(".")
        heads = range(n_heads) if head_text == "*" else _ints(head_text, request.text)
        for layer in LayerSet.parse(layer_text).blocks(n_layers):
            bad = [h for h in heads if not 0 <= h < n_heads]
            if bad:
                raise ValueError(f"intervention {request.text!r}: heads {bad} out of range (model has {n_heads})")
            pairs.extend((layer, head) for head in heads)
    return pairs


def _ints(text: str, context: str) -> list[int]:
    """A comma list of indices >= 0 (no negative, Python-style indices: dim -1 is not the last)."""
    parts = str(text).split(",")
    if not all(part.isdigit() and part.isascii() for part in parts):
        raise ValueError(f"intervention {context!r}: {text!r} is not a comma list of integers >= 0") from None
    return [int(part) for part in parts]


def canonical(ablations: list[Ablation]) -> Intervention:
    """Merge ablations that differ only in units; sort. Equal configurations -> equal tuples."""
    merged: dict[tuple[Any, ...], set[int]] = {}
    for a in ablations:
        own_units = a.units if a.rows is not None else None  # #massive: one dim per ablation, never merged
        key = (a.target, a.layer, a.tokens, a.mode, a.value, a.rows, own_units, a.param, a.index)
        merged.setdefault(key, set()).update(a.units)
    return tuple(
        sorted(
            (
                Ablation(target, layer, tuple(sorted(units)), tokens, mode, value, rows, param, index)
                for (target, layer, tokens, mode, value, rows, _, param, index), units in merged.items()
            ),
            key=lambda a: (a.target, a.layer, a.param, a.index, a.units, a.mode, a.value, a.tokens or (), a.rows or ()),
        )
    )


def describe(intervention: Intervention) -> str:
    """Readable summary: ablations that differ only in layer are grouped, e.g. 'attn@0-29'."""
    if not intervention:
        return "baseline"
    groups: dict[tuple[Any, ...], list[int]] = {}
    for a in intervention:  # #massive cells differ per layer: grouped by "massive", not by position
        where = a.tokens if a.rows is None else "massive"
        value = a.value if a.rows is None or a.mode != "mean" else None
        groups.setdefault((a.target, a.units, where, a.mode, value, a.param, a.index), []).append(a.layer)
    parts = []
    for (target, units, where, mode, value, param, index), layers in groups.items():
        if target == "weight":
            parts.append(f"weight:{param}@{ranges(layers)}{_index_text(index)}" + _where_and_mode(None, None, mode, value or 0.0))
            continue
        text = f"{target}@{ranges(layers)}" + (f"[{','.join(map(str, units))}]" if units else "")
        rows = () if where == "massive" else None
        parts.append(text + _where_and_mode(None if where == "massive" else where, rows, mode, value or 0.0))
    return " + ".join(parts)


def _where_and_mode(tokens: Sequence[int] | None, rows: object, mode: str, value: float) -> str:
    text = "#massive" if rows is not None else (f"#{','.join(map(str, tokens))}" if tokens is not None else "")
    return text + ("" if mode == "zero" else f"={mode}" + (f":{value:g}" if mode == "value" else ""))


def ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'"""
    values = sorted(values)
    spans: list[list[int]] = []  # [low, high]
    for v in values:
        if spans and v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


# The tensor each intervention edits. attn/mlp edit what is added to the residual stream (for
# Gemma 2/3, after the post-attention / post-feedforward norm: zero removes the whole contribution,
# =mean puts back its position-wise dataset mean there); heads edit the output projection's input.
TARGET_SITE = {
    "heads": "attn.o_in",
    "attn": "attn.resid",
    "mlp": "mlp.resid",
    "dims": "out",
    "neurons": "mlp.down_in",
    "massive": "out",
}  # weight edits change parameters, not a tensor of the pass (engine/weights.py)


def mean_sites(intervention: Intervention) -> set[str]:
    """Sites whose baseline dataset mean a `mean`-mode ablation needs."""
    return {f"blocks.{a.layer}.{TARGET_SITE[a.target]}" for a in intervention if a.mode == "mean" and a.rows is None}


def mean_sites_of_requests(requests: list[Request], n_layers: int) -> set[str]:
    """The same, before resolution (ranked heads are not known yet: all layers, to be safe)."""
    sites: set[str] = set()
    for r in requests:
        if r.mode != "mean" or r.at_massive_cells:  # these carry their own mean
            continue
        if r.target == "heads":
            ranked = r.selection == "all" or r.selection.startswith(("top", "bottom"))
            layers: Iterable[int] = (
                range(n_layers) if ranked else {int(item.partition(".")[0]) for item in r.selection.split(",")}
            )
        else:
            layers = _blocks(r, n_layers)
        sites |= {f"blocks.{layer}.{TARGET_SITE[r.target]}" for layer in layers}
    return sites


def massive_slices_of_requests(requests: list[Request], n_layers: int) -> set[tuple[str, int]]:
    """(block output site, dim) pairs whose every-token values `#massive` edits read from the
    baseline, to find where each dim is massive per sequence."""
    return {
        (f"blocks.{layer}.out", dim)
        for r in requests
        if r.tokens == "massive"
        for layer in _blocks(r, n_layers)
        for dim in _ints(r.selection, r.text)
    }
    # massive:all cannot be planned: its dims are known only once the baseline has run (one more
    # baseline pass then reads their every-token values)
