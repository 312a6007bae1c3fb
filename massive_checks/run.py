"""Forward passes, shared: one pass per (model, data, intervention) per session, keyed by all of
them; then measures on a configuration and checks against a spec's bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import hooks, interventions, measures
from .data import Batch, DataConfig, tokenize
from .interventions import BASELINE
from .errors import ActivationOverflow, SpecError
from .models import LoadedModel
from .spec import Bound, Check, Quantity, Spec

MLP_FLOW = ("in", "up", "gate", "act", "down_in", "out", "resid")  # checkpoint order inside an MLP
STATISTIC_TEXT = {  # how every layer-wise number is computed; written into results, goldens, figures
    "paper": "per sequence: top-k (and median) of its flattened |block output| over real tokens; "
             "then the mean over sequences (Sun et al. 2024); ratio = mean top-1 / mean median",
    "max_over_sequences": "top-k cells of the per-(token, dim) maximum of |a| over sequences",
}


@dataclass
class Needs:
    """What a forward pass must capture. Block outputs (with medians) are always captured."""

    sites: set[str] = field(default_factory=set)
    medians: set[str] = field(default_factory=set)
    loss: bool = False
    slices: set[tuple[str, int]] = field(default_factory=set)  # (site, feature) kept at every token

    def covers(self, other: "Needs") -> bool:
        return (other.sites <= self.sites and other.medians <= self.medians and other.slices <= self.slices
                and (self.loss or not other.loss))

    def merge(self, other: "Needs") -> None:
        self.sites |= other.sites
        self.medians |= other.medians
        self.slices |= other.slices
        self.loss = self.loss or other.loss


@dataclass
class PassResult:
    stats: dict[str, hooks.SiteStats]
    needs: Needs
    loss: float | None  # mean next-token loss over real tokens


class ModelSession:
    """Everything computed on one loaded model; the cache key includes data and intervention."""

    def __init__(self, lm: LoadedModel, batch_size: int = 8):
        self.lm, self.batch_size = lm, batch_size
        self.forward_passes = 0  # full passes over a dataset: tests assert on sharing
        self._passes: dict[tuple, PassResult] = {}
        self._planned: dict[tuple[DataConfig, tuple], Needs] = {}  # (data, plan key) -> needs
        self._batches: dict[DataConfig, Batch] = {}

    def batch(self, data: DataConfig) -> Batch:
        if data not in self._batches:
            self._batches[data] = tokenize(self.lm.tokenizer, data)
        return self._batches[data]

    def plan(self, data: DataConfig, plan_key: tuple, needs: Needs) -> None:
        """Announce what a configuration (its intervention request texts) will need, before
        its pass runs, so that each pass captures everything once."""
        self._planned.setdefault((data, plan_key), Needs()).merge(needs)

    def run(self, data: DataConfig, intervention=BASELINE, needs: Needs | None = None, plan_key: tuple = ()) -> PassResult:
        wanted = self._planned.setdefault((data, plan_key or _plan_key_of(intervention)), Needs())
        wanted.merge(needs or Needs())
        key = (data, intervention)
        cached = self._passes.get(key)
        if cached is None or not cached.needs.covers(wanted):
            if cached is not None:
                wanted.merge(cached.needs)  # a recompute never loses earlier captures
            self._passes[key] = self._forward(data, intervention, wanted)
        return self._passes[key]

    def holds(self, data: DataConfig, intervention, site_name: str) -> bool:
        cached = self._passes.get((data, intervention))
        return cached is not None and site_name in cached.stats

    def _forward(self, data: DataConfig, intervention, planned: Needs) -> PassResult:
        means = self.means(data, intervention)  # may run the baseline pass first
        lm, batch = self.lm, self.batch(data)
        blocks = {hooks.site(layer, "out") for layer in range(lm.n_layers)}
        needs = Needs(planned.sites | blocks, planned.medians | blocks, planned.loss, set(planned.slices))
        slices: dict[str, tuple[int, ...]] = {}
        for name, dim in sorted(needs.slices):
            slices[name] = (*slices.get(name, ()), dim)
        losses: list[torch.Tensor] = []
        with torch.no_grad(), hooks.intervene(lm, intervention, means), \
                hooks.capture(lm, sorted(needs.sites), needs.medians, slices) as recorder:
            for start in range(0, batch.input_ids.shape[0], self.batch_size):
                ids = batch.input_ids[start:start + self.batch_size]
                mask = batch.attention_mask[start:start + self.batch_size]
                width = int(mask.sum(dim=1).max())  # drop all-padding columns of this chunk
                ids, mask = ids[:, :width].to(lm.device), mask[:, :width].to(lm.device)
                # Without a loss to measure, the decoder alone: no [B, T, vocab] logits (for Gemma 3's
                # 262k vocabulary, most of a pass's time and memory).
                network = lm.model if needs.loss else lm.model.base_model
                with hooks.forward_chunk(lm, mask, start):
                    output = network(input_ids=ids, attention_mask=mask, use_cache=False)
                if needs.loss:
                    losses.append(_token_losses(output.logits, ids, mask))
        self.forward_passes += 1
        loss = float(torch.cat(losses).mean()) if losses else None
        return PassResult(recorder.finish(), needs, loss)

    def means(self, data: DataConfig, intervention) -> dict[str, torch.Tensor]:
        """Baseline position-wise means [T, F] at the sites mean-mode ablations edit."""
        sites = interventions.mean_sites(intervention)
        if not sites:
            return {}
        baseline = self.run(data, BASELINE, Needs(sites=sites))
        return {name: baseline.stats[name].mean() for name in sites}

    def resolve(self, data: DataConfig, requests: list, massive=(100.0, 1000.0)) -> tuple:
        """Intervention requests -> canonical intervention (ranking heads, or finding the massive
        cells in the baseline, first if asked)."""
        ranking = None
        if any(r.target == "heads" and r.selection.startswith(("top", "bottom")) for r in requests):
            ranking = measures.rank_heads(self.view(data, BASELINE).head_score_table("first"))
        baseline = self.view(data, BASELINE, massive)
        return interventions.resolve(requests, self.lm.n_layers, self.lm.n_heads, ranking, baseline)

    def view(self, data: DataConfig, intervention=BASELINE, massive=(100.0, 1000.0), plan_key: tuple = ()) -> "ConfigView":
        return ConfigView(self, data, intervention, massive, plan_key)

    def plan_spec(self, spec: Spec, data: DataConfig) -> None:
        for config, needs in needs_of(spec, self.lm).items():
            requests = spec.interventions.get(config, [])
            self.plan(data, plan_key(requests), needs)
            mean = interventions.mean_sites_of_requests(requests, self.lm.n_layers)
            slices = interventions.massive_slices_of_requests(requests, self.lm.n_layers)
            if mean or slices:  # read from the baseline pass before this configuration's own
                self.plan(data, (), Needs(sites=mean, slices=slices))


def numerics_message(lm: LoadedModel, site_name: str, config: str) -> str:
    dtype = str(lm.dtype).removeprefix("torch.")
    limit = {"float16": "float16 overflows at 65504", "bfloat16": "bfloat16 overflows at ~3.4e38"}.get(dtype, f"{dtype} overflowed")
    advice = " - run with --dtype float32 or bfloat16" if dtype == "float16" else ""
    return (f"numerics error on {lm.name}: inf/nan activations at {site_name} ({config}) in {dtype}; {limit}{advice}. "
            f"Not a verdict on the claim.")


def plan_key(requests: list) -> tuple:
    return tuple(sorted(r.text for r in requests))


def _plan_key_of(intervention) -> tuple:
    # Passes run directly with a canonical intervention (CLI, tests) plan under its label.
    return (interventions.describe(intervention),) if intervention else ()


def needs_of(spec: Spec, lm: LoadedModel) -> dict[str, Needs]:
    """Per configuration name: the captures a spec's measures need beyond block outputs."""
    per_config: dict[str, Needs] = {"baseline": Needs()}
    for q in spec.quantities():
        needs = _quantity_needs(q, lm)
        for config in q.configs():
            per_config.setdefault(config, Needs()).merge(needs)
    return per_config


def mlp_flow(lm: LoadedModel) -> list[str]:
    """MLP checkpoints in flow order; `gate` only for gated MLPs, `resid` (the post-feedforward
    norm's output, what is added to the residual stream) only where it differs from `out`."""
    return [c for c in MLP_FLOW if (c != "gate" or lm.adapter.gate is not None) and (c != "resid" or lm.adapter.mlp_resid)]


def _quantity_needs(q: Quantity, lm: LoadedModel) -> Needs:
    needs, n_layers = Needs(), lm.n_layers
    layers = interventions.parse_layers(q.layers or "all", n_layers)
    if q.measure in ("head_score", "head_rank"):
        needs.sites = {hooks.site(L, "attn.probs") for L in range(n_layers)}
    elif q.measure in ("mlp_max", "mlp_median"):
        needs.sites = {hooks.site(L, f"mlp.{q.checkpoint}") for L in layers}
        needs.medians = set(needs.sites) if q.measure == "mlp_median" else set()
    elif q.measure == "explosion_point":
        needs.sites = {hooks.site(q.layer, f"mlp.{c}") for c in mlp_flow(lm)}
    elif q.measure in ("top_neurons", "top_neurons_share"):
        needs.sites = {hooks.site(q.layer, "mlp.out"), hooks.site(q.layer, "mlp.down_in")}
    elif q.measure == "max_rel_diff":
        needs.sites = {hooks.site(L, q.site) for L in layers}
    needs.loss = q.measure == "loss"
    return needs


def _token_losses(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token losses at real positions only. logits [B, T, V] -> [n_real_targets]."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, T-1]
    return nll[mask[:, 1:].bool()].cpu()


# --------------------------------------------------------------------------- measures on a config


class ConfigView:
    """Measures of one (model, data, intervention), computed from its (shared) pass."""

    def __init__(self, session: ModelSession, data: DataConfig, intervention, massive, plan_key: tuple = ()):
        self.session, self.data, self.intervention, self.plan_key = session, data, intervention, plan_key
        self.min_value, self.min_ratio = massive
        self.lm = session.lm

    def _pass(self, sites=(), medians=(), loss=False, slices=()) -> PassResult:
        return self.session.run(self.data, self.intervention, Needs(set(sites), set(medians), loss, set(slices)), self.plan_key)

    def stats(self, name: str, median: bool = False) -> hooks.SiteStats:
        stats = self._pass([name], [name] if median else []).stats[name]
        if stats.overflow:  # a numerics error, never a verdict on the claim
            raise ActivationOverflow(numerics_message(self.lm, name, interventions.describe(self.intervention)))
        return stats

    def captured(self, name: str) -> bool:
        """Whether this configuration's pass already holds a site (asking never recomputes)."""
        return self.session.holds(self.data, self.intervention, name)

    def block(self, layer: int) -> hooks.SiteStats:
        return self.stats(hooks.site(layer, "out"), median=True)

    # -- layer profile. Two statistics (spec.STATISTICS): "paper" (per sequence, then averaged
    # over sequences: Sun et al. and the seeds) and "max_over_sequences" (per-cell maxima).
    def top(self, layer: int, k: int = 3) -> list[measures.Cell]:
        """The k largest cells of the per-(token, dim) max over sequences: where values sit."""
        return measures.top_cells(self.block(layer).cell_max, k)

    def top_value(self, layer: int, k: int, statistic: str = "paper") -> float:
        if statistic == "paper":
            return measures.paper_top(self.block(layer).cells(), k)
        return self.top(layer, k)[k - 1].value

    def median(self, layer: int) -> float:
        """Each sequence's median |a| over its real tokens and dims, averaged over sequences."""
        return float(self.block(layer).median().mean())

    def ratio(self, layer: int, statistic: str = "paper") -> float:
        """top-1 / median, both averaged over sequences (the seeds' ratio column: 2475 / 0.84)."""
        return measures.ratio(self.top_value(layer, 1, statistic), self.median(layer))

    def dim_peak(self, layer: int, dim: int, statistic: str = "paper") -> float:
        """max |a| of one dim over real tokens: per sequence then averaged, or over all."""
        stats = self.block(layer)
        return float(stats.dim_max()[:, dim].mean()) if statistic == "paper" else float(stats.cell_max[:, dim].max())

    def top1_where(self, layer: int, what: str, statistic: str = "paper"):
        """The dim (or token) of the top-1: the set over sequences of each one's top-1 ("paper"),
        or the single top cell of the max over sequences."""
        if statistic == "paper":
            _, features, tokens = self.block(layer).top()
            return frozenset((features if what == "dim" else tokens).tolist())
        cell = self.top(layer, 1)[0]
        return cell.dim if what == "dim" else cell.token

    def massive_dims(self, layer: int) -> set[int]:
        """Dims holding a massive cell in some sequence (measures.is_massive, that sequence's median)."""
        stats = self.block(layer)
        return measures.massive_indices(stats.dim_max(), stats.median(), self.min_value, self.min_ratio)

    def massive_tokens(self, layer: int) -> set[int]:
        stats = self.block(layer)
        return measures.massive_indices(stats.token_max(), stats.median(), self.min_value, self.min_ratio)

    def massive_examples(self, layer: int) -> tuple[list[measures.Cell], bool]:
        """Massive cells among each sequence's largest, and whether there may be more."""
        stats = self.block(layer)
        return measures.massive_examples(stats.cells(), stats.median(), self.min_value, self.min_ratio)

    def massive(self, layer: int) -> list[measures.Cell]:
        return self.massive_examples(layer)[0]

    def massive_cells(self, layers: list[int], dims: list[int] | None = None) -> dict:
        """{(layer, dim): (positions per sequence, mean signed value there)} for the cells where
        each dim is massive after each block (dims None: every dim massive there). One pass reads
        all the every-token values needed."""
        wanted = [(hooks.site(L, "out"), d) for L in layers for d in (dims if dims is not None else sorted(self.massive_dims(L)))]
        names = sorted({name for name, _ in wanted})
        stats = self._pass(names, names, slices=wanted).stats
        return {(int(name.split(".")[1]), d): self._massive_rows(stats[name], d) for name, d in wanted}

    def _massive_rows(self, stats: hooks.SiteStats, dim: int) -> tuple[tuple[tuple[int, ...], ...], float]:
        signed = stats.slice(dim)  # [S, T]
        hits = measures.is_massive(signed.abs(), stats.median()[:, None], self.min_value, self.min_ratio)
        rows = tuple(tuple(int(t) for t in row.nonzero().flatten()) for row in hits)
        return rows, (float(signed[hits].mean()) if bool(hits.any()) else 0.0)

    def massive_elsewhere(self, layers: list[int]) -> float | None:
        """Share of massive positions (sequence, token), over blocks, on neither the sequence's
        first token nor its first delimiter ("." or a newline); None when nothing is massive."""
        delimiters = self.first_delimiters()  # [S]
        total = elsewhere = 0
        for layer in layers:
            stats = self.block(layer)
            hits = measures.is_massive(stats.token_max(), stats.median()[:, None], self.min_value, self.min_ratio)
            positions = torch.arange(hits.shape[1])[None, :]
            allowed = (positions == 0) | (positions == delimiters[:, None])
            total += int(hits.sum())
            elsewhere += int((hits & ~allowed).sum())
        return elsewhere / total if total else None

    def first_delimiters(self) -> torch.Tensor:
        """[S] position of each sequence's first delimiter token after position 0 (-1: none)."""
        batch, tokenizer = self.session.batch(self.data), self.lm.tokenizer
        vocab = {int(i): tokenizer.decode([int(i)]) for i in batch.input_ids.unique()}
        delimiter = torch.tensor([[("." in vocab[int(i)] or "\n" in vocab[int(i)]) for i in row] for row in batch.input_ids])
        delimiter[:, 0] = False
        delimiter &= batch.attention_mask.bool()
        first = delimiter.float().argmax(dim=1)
        return torch.where(delimiter.any(dim=1), first, torch.full_like(first, -1))

    def emergence_layer(self, layers: list[int]) -> int | None:
        return next((layer for layer in layers if self.massive_dims(layer)), None)

    def profile(self) -> dict:
        """The `massive-checks profile --json` document: per layer the max-over-sequences cells
        ("top", "median", "ratio" of top-1 cell / median) and the paper's statistic ("paper")."""
        layers = []
        for layer in range(self.lm.n_layers):
            paper = {"top": [self.top_value(layer, k) for k in (1, 2, 3)], "median": self.median(layer),
                     "ratio": self.ratio(layer)}
            layers.append({"layer": layer, "top": [c.as_dict() for c in self.top(layer)], "median": self.median(layer),
                           "ratio": self.ratio(layer, "max_over_sequences"), "paper": paper})
        examples = [self.massive_examples(layer) for layer in range(self.lm.n_layers)]
        massive = [{"layer": layer, **cell.as_dict()} for layer, (cells, _) in enumerate(examples) for cell in cells]
        truncated = [layer for layer, (_, more) in enumerate(examples) if more]
        return {"model": self.lm.name, "intervention": interventions.describe(self.intervention),
                "statistics": STATISTIC_TEXT, "layers": layers, "massive": massive, "massive_truncated_layers": truncated,
                "massive_dims_per_layer": {layer: sorted(self.massive_dims(layer)) for layer in range(self.lm.n_layers)},
                "massive_tokens_per_layer": {layer: sorted(self.massive_tokens(layer)) for layer in range(self.lm.n_layers)}}

    # -- heads
    def head_score_table(self, to: str) -> torch.Tensor:  # [L, H]
        names = [hooks.site(layer, "attn.probs") for layer in range(self.lm.n_layers)]
        result = self._pass(names)
        tokens = None
        if to == "massive":  # per sequence: the token of its largest activation, at the peak layer
            peak = max(range(self.lm.n_layers), key=lambda layer: self.top(layer, 1)[0].value)
            tokens = self.block(peak).top()[2]
        return torch.stack([measures.head_scores(result.stats[n].attention_to_keys(), tokens) for n in names])

    # -- MLP internals
    def mlp_checkpoints(self) -> list[str]:
        return mlp_flow(self.lm)

    def mlp_stat(self, layer: int, checkpoint: str, what: str, statistic: str = "paper") -> float:
        """max |a| (per sequence then averaged, or over all) or median |a| inside an MLP."""
        stats = self.stats(hooks.site(layer, f"mlp.{checkpoint}"), median=(what == "median"))
        if what == "median":
            return float(stats.median().mean())
        return float(stats.dim_max().amax(dim=1).mean()) if statistic == "paper" else float(stats.cell_max.max())

    def explosion_point(self, layer: int) -> str:
        return measures.explosion_point({c: self.mlp_stat(layer, c, "max") for c in self.mlp_checkpoints()})

    def neuron_contributions(self, layer: int, dim: int) -> torch.Tensor:
        """[F] contribution of each unit to output `dim` at the token where that output peaks."""
        token = int(self.stats(hooks.site(layer, "mlp.out")).cell_max[:, dim].argmax())
        down_in = self.stats(hooks.site(layer, "mlp.down_in")).mean()[token]
        down = hooks.resolve(self.lm, hooks.site(layer, "mlp.out"))[0]
        return measures.neuron_contributions(down_in, down.weight, dim, self.lm.adapter.conv1d)

    def loss(self) -> float:
        return self._pass(loss=True).loss


# --------------------------------------------------------------------------- checks


@dataclass
class Row:
    key: str  # "layer 5", "L5H1", "value"
    expected: str
    observed: object
    ok: bool


@dataclass
class CheckResult:
    description: str
    rows: list[Row]
    line: int
    key: str = ""  # Check.key(): stable across rewording and reordering

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)


@dataclass
class Outcome:
    spec: Spec
    model: str
    checks: list[CheckResult]
    configs: dict[str, str]  # configuration name -> canonical description
    observed: dict  # numbers per configuration and layer, for results.json / goldens / figures
    figure_data: dict = field(default_factory=dict)  # arrays only figures need (not serialized)

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    def values(self) -> dict:
        """Flat {key: value} of everything observed: what a golden snapshot stores."""
        flat = {}
        for check in self.checks:
            for row in check.rows:
                flat[f"check: {check.key} | {row.key}"] = row.observed
        for config, measures_by_name in self.observed.items():
            for name, per_layer in measures_by_name.items():
                flat.update({f"{config} {name} (paper statistic) | layer {L}": v for L, v in enumerate(per_layer)})
        return flat


class Evaluator:
    """Evaluates one spec on one model session."""

    def __init__(self, spec: Spec, session: ModelSession, data: DataConfig):
        self.spec, self.session, self.data, self.lm = spec, session, data, session.lm
        self._views: dict[str, ConfigView] = {}

    def view(self, config: str) -> ConfigView:
        if config not in self._views:
            requests = self.spec.interventions.get(config, [])
            intervention = self.session.resolve(self.data, requests, self.spec.massive) if requests else BASELINE
            self._views[config] = self.session.view(self.data, intervention, self.spec.massive, plan_key(requests))
        return self._views[config]

    def layers(self, q: Quantity) -> list[int]:
        return interventions.parse_layers(q.layers or "all", self.lm.n_layers)

    def evaluate(self) -> Outcome:
        self.validate_against_model()
        checks = [self.check(c) for c in self.spec.checks]
        configs = {name: interventions.describe(self.view(name).intervention) for name in sorted(self.spec.configs())}
        return Outcome(self.spec, self.lm.name, checks, configs, self.observed(), self.figure_data())

    def validate_against_model(self) -> None:
        """Reject what the model does not have, before any pass: layers past its depth, dims past
        its width (e.g. LLaMA2-7B's dims 1415, 2533 on GPT-2), heads, MLP units. A SpecError for
        this spec alone, naming file, line and key."""
        width, spec, L, H = self.lm.width, self.spec, self.lm.n_layers, self.lm.n_heads
        missing = sorted(d for d in spec.named_dims() if d >= width)
        if missing:
            raise SpecError(spec.path, spec.line, "dims", f"spec {spec.id!r} names dims {missing} that {self.lm.name} "
                                                          f"does not have: its residual stream has {width} dims (0-{width - 1})")
        bad_heads = sorted(f"{l}.{h}" for l, h in spec.named_heads() if l >= L or h >= H)
        if bad_heads:
            raise SpecError(spec.path, spec.line, "head", f"spec {spec.id!r} names heads {bad_heads} that {self.lm.name} "
                                                          f"does not have: it has {L} layers x {H} heads")
        for index, check in enumerate(spec.checks):
            for q in (check.quantity, check.versus):
                if q is None:
                    continue
                try:
                    interventions.parse_layers(q.layers or "all", L)
                    if q.layer is not None and q.layer >= L:
                        raise ValueError(f"layer {q.layer}: {self.lm.name} has {L} blocks (0-{L - 1})")
                except ValueError as exc:
                    raise SpecError(spec.path, check.line, f"checks[{index}].layers", str(exc)) from None
        for name, requests in spec.interventions.items():
            try:
                interventions.check_against_model(requests, L, H, self.lm.mlp_width)
            except ValueError as exc:
                raise SpecError(spec.path, spec.line, f"interventions.{name}", str(exc)) from None

    def observed(self) -> dict:
        """Per configuration: the per-layer profile every spec carries in results.json, in the
        paper's statistic (STATISTIC_TEXT["paper"])."""
        result = {}
        for name in sorted(self.spec.configs() | {"baseline"}):  # the baseline always: figures compare with it
            view, layers = self.view(name), range(self.lm.n_layers)
            result[name] = {f"top{k}": [view.top_value(L, k) for L in layers] for k in (1, 2, 3)}
            result[name]["median"] = [view.median(L) for L in layers]
        return result

    def figure_data(self) -> dict:
        """Arrays for this spec's figure, taken only from captures its passes already hold."""
        base, data = self.view("baseline"), {}
        quantities = self.spec.quantities()
        measures = {q.measure for q in quantities}
        if measures & {"head_score", "head_rank"}:
            data["head_scores"] = base.head_score_table("first").tolist()
        mlp_layers = sorted({L for q in quantities if q.measure.startswith(("mlp_", "explosion", "top_neurons"))
                             for L in ([q.layer] if q.layer is not None else self.layers(q))})
        if mlp_layers:
            data["mlp"] = {L: {c: base.mlp_stat(L, c, "max") for c in base.mlp_checkpoints()
                               if base.captured(hooks.site(L, f"mlp.{c}"))} for L in mlp_layers}
        if measures & {"massive_dims", "massive_tokens", "top1_dim", "top1_token", "dim_peak"}:
            peak = max(range(self.lm.n_layers), key=lambda L: base.top(L, 1)[0].value)
            data["cells"] = base.block(peak).cell_max[:8].numpy()  # [tokens, dims]
            data["cells_layer"], data["massive_dims"] = peak, sorted(base.massive_dims(peak))
        return data

    # -- one quantity -> {layer: value} (per layer) or a single value
    def value(self, q: Quantity):
        if q.change:
            before, after = self._reduced(q, q.change[0]), self._reduced(q, q.change[1])
            diff = measures.relative_change if q.change_kind == "relative" else (lambda a, b: b - a)
            value = {k: diff(before[k], after[k]) for k in before} if isinstance(before, dict) else diff(before, after)
        else:
            value = self._reduced(q, q.config)
        if q.aggregate:  # validated at collection: only on numbers per layer, never silently dropped
            return _aggregate(q.aggregate, list(value.values()))
        return value

    def _reduced(self, q: Quantity, config: str):
        value = self._raw(q, config)
        return _aggregate(q.reduce, list(value.values())) if q.reduce else value

    def _raw(self, q: Quantity, config: str):
        view, m, st = self.view(config), q.measure, q.statistic
        per_layer = {
            "top1": lambda L: view.top_value(L, 1, st), "top2": lambda L: view.top_value(L, 2, st),
            "top3": lambda L: view.top_value(L, 3, st), "median": view.median, "ratio": lambda L: view.ratio(L, st),
            "top1_dim": lambda L: view.top1_where(L, "dim", st), "top1_token": lambda L: view.top1_where(L, "token", st),
            "dim_peak": lambda L: view.dim_peak(L, q.dim, st),
            "mlp_max": lambda L: view.mlp_stat(L, q.checkpoint, "max", st),
            "mlp_median": lambda L: view.mlp_stat(L, q.checkpoint, "median"),
            "max_rel_diff": lambda L: self._rel_diff(view, self.view(q.versus), hooks.site(L, q.site)),
        }
        if m in per_layer:
            return {L: per_layer[m](L) for L in self.layers(q)}
        if m in ("massive_dims", "massive_tokens"):
            find = view.massive_dims if m == "massive_dims" else view.massive_tokens
            return frozenset().union(*(find(L) for L in self.layers(q)))
        if m == "emergence_layer":
            return view.emergence_layer(self.layers(q))
        if m == "massive_elsewhere":
            return view.massive_elsewhere(self.layers(q))
        if m in ("head_score", "head_rank"):
            table = view.head_score_table(q.to)
            layer, head = q.head
            if m == "head_score":
                return float(table[layer, head])
            return measures.rank_heads(table).index((layer, head)) + 1
        if m == "explosion_point":
            return view.explosion_point(q.layer)
        if m == "top_neurons":
            return [unit for unit, _ in measures.top_contributors(view.neuron_contributions(q.layer, q.dim), q.k)]
        if m == "top_neurons_share":
            return measures.top_share(view.neuron_contributions(q.layer, q.dim), q.k)
        if m == "loss":
            return view.loss()
        raise AssertionError(f"unhandled measure {m}")

    def _rel_diff(self, a: ConfigView, b: ConfigView, name: str) -> float:
        sa, sb = a.stats(name), b.stats(name)
        return max(measures.max_rel_diff(sa.cell_max, sb.cell_max), measures.max_rel_diff(sa.mean(), sb.mean()))

    def check(self, check: Check) -> CheckResult:
        observed = self.value(check.quantity)
        description = _describe(check.quantity)
        pairs = observed.items() if isinstance(observed, dict) else [("value", observed)]
        if check.versus is not None:
            other = self.value(check.versus)
            description += f"  vs  {_describe(check.versus)}"
            others = other if isinstance(other, dict) else {"value": other}  # same keys: checked at collection
            rows = [Row(_key(k), f"{check.bound.text()} (b = {measures.format_value(others[k])})", v,
                        _ratio_holds(v, others[k], check.bound.value)) for k, v in pairs]
        else:
            rows = [Row(_key(k), check.bound.text(), v, _within(check.bound, v)) for k, v in pairs]
        if not rows:  # an empty layer range must not pass a check with nothing in it
            rows = [Row("no layers", check.bound.text(), None, False)]
        return CheckResult(description, rows, check.line, check.key())


def _ratio_holds(a, b, ratio_min: float) -> bool:
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)):
        return False
    return abs(a) >= ratio_min * abs(b)


def _aggregate(how: str, values: list[float]) -> float:
    absolute = [abs(v) for v in values]
    return {"mean": lambda: sum(values) / len(values), "max": lambda: max(values), "min": lambda: min(values),
            "mean_abs": lambda: sum(absolute) / len(values), "max_abs": lambda: max(absolute)}[how]()


def _within(bound: Bound, value) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    kind, target = bound.kind, bound.value
    if kind == "between":
        return target[0] <= value <= target[1]
    if kind == "min":
        return value >= target
    if kind == "max":
        return value <= target
    if kind == "approx":
        return abs(value - target) <= bound.rel * abs(target)
    items = frozenset(value) if isinstance(value, (list, set, frozenset)) else frozenset([value])
    if kind == "equals":
        if isinstance(value, (list, set, frozenset)):  # a set equals a set, or one element
            return items == (target if isinstance(target, frozenset) else frozenset([target]))
        return value == target
    return {"subset_of": lambda: items <= target, "contains": lambda: target <= items,
            "not_contains": lambda: not (target & items)}[kind]()


def _describe(q: Quantity) -> str:
    text = q.measure if q.statistic == "paper" else f"{q.measure} (max over sequences)"
    details = [f"{k}={v}" for k, v in (("dim", q.dim), ("checkpoint", q.checkpoint if q.measure.startswith("mlp_") else None),
                                       ("layer", q.layer), ("k", q.k if q.measure.startswith("top_neurons") else None), ("head", q.head and f"{q.head[0]}.{q.head[1]}"),
                                       ("versus", q.versus)) if v is not None]
    if q.measure.startswith("head_"):
        details.append(f"to={q.to}")
    text += f"({', '.join(details)})" if details else ""
    text = f"{q.reduce} over layers {q.layers or 'all'} of {text}" if q.reduce else text
    text = f"{q.change_kind} change of {text} from {q.change[0]} to {q.change[1]}" if q.change else f"{text} [{q.config}]"
    text += f", layers {q.layers}" if q.layers and not q.reduce else ""
    return f"{q.aggregate} of {text}" if q.aggregate else text


def _key(k) -> str:
    return f"layer {k}" if isinstance(k, int) else str(k)
