"""Forward passes on one model, shared: one pass per (data, intervention) per session, capturing
everything every planned spec needs from it; and ConfigView, what measures read a configuration's
captures through."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from massive_checks.base.constants import MASSIVE_RULE
from massive_checks.base.errors import ActivationOverflow, OutOfMemory
from massive_checks.engine import hooks, models, notices, readings
from massive_checks.engine.batches import Batch, tokenize
from massive_checks.engine.capture import SiteStats, contribution_pairs, finish_all, pooled_pairs, stat_pairs
from massive_checks.engine.edits import EditLog, applied
from massive_checks.engine.memory import memory_message, out_of_memory, release_memory
from massive_checks.engine.models import LoadedModel
from massive_checks.engine.needs import Needs
from massive_checks.engine.stats import output_column, rank_heads, target_log_probs
from massive_checks.language import contrast, interventions
from massive_checks.language.data import DataConfig
from massive_checks.language.intervals import Bootstrap, Estimate, Units
from massive_checks.language.interventions import BASELINE


class PassResult:
    def __init__(self, stats: dict[str, SiteStats], needs: Needs, token_loss: torch.Tensor | None, pooled: dict | None = None):
        self.stats, self.needs = stats, needs
        self.token_loss = token_loss  # [S, 2] per sequence: next-token loss summed over its real targets, their count
        self.pooled = pooled or {}  # (block site, window) -> [S, D] per-example means over the window
        self.identity = False  # the intervention's edits changed no value they touched (edits.EditLog)
        self.contributions: dict = {}  # (layer, dim) -> [S, F] units' contributions at each sequence's peak

    @property
    def loss(self) -> float | None:
        """Mean next-token loss over every real target of the data set."""
        if self.token_loss is None:
            return None
        total, count = self.token_loss.sum(dim=0).tolist()
        return total / count


MAX_ROWS = {"cpu": 8, "cuda": 64}  # automatic chunk sizes stop here (cpu: more rows are not faster)
MEMORY_SHARE = 0.5  # of the free memory, what one chunk's activations may use


def rows_per_chunk(row_bytes: int, free_bytes: int | None, device: str) -> int:
    """The automatic batch size: as many sequences as fit in half the free memory, 1 to the
    device's maximum (its maximum when the free memory is unknown)."""
    most = MAX_ROWS["cuda" if device.startswith("cuda") else "cpu"]
    if free_bytes is None:
        return most
    return max(1, min(most, int(free_bytes * MEMORY_SHARE) // max(row_bytes, 1)))


class ModelSession:
    """Everything computed on one loaded model; the cache key includes data and intervention.
    batch_size: sequences per forward chunk; None chooses it per pass from free memory."""

    def __init__(
        self,
        lm: LoadedModel,
        batch_size: int | None = None,
        bootstrap: Bootstrap | None = None,
        judge_loader: Callable[[str], LoadedModel] | None = None,
        judge_model: str | None = None,
    ):
        self.lm, self.batch_size = lm, batch_size
        # Steering's coherence judge (judges.py): loaded once, by the suite where there is one.
        self._judge_loader = judge_loader or (lambda name: models.load(name, lm.device))
        self.judge_default = judge_model  # --judge-model; None: models.default_judge
        self.bootstrap = bootstrap or Bootstrap()  # resamples of the sampling units, drawn once per set
        self.forward_passes = 0  # full passes over a dataset: tests assert on sharing
        self._passes: dict[tuple, PassResult] = {}
        self._planned: dict[tuple[DataConfig, tuple], Needs] = {}  # (data, plan key) -> needs
        self._batches: dict[DataConfig, Batch] = {}
        self._memo: dict = {}

    def memo(self, key, compute: Callable):
        """A value derived from this session's passes (e.g. a steering vector), computed once."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def load_other(self, name: str) -> LoadedModel:
        """Another model by name (steering's fluency judge), loaded once by the suite where there is
        one; this session's own model when named so."""
        return self.lm if name == self.lm.name else self._judge_loader(name)

    def batch(self, data: DataConfig) -> Batch:
        if data not in self._batches:
            self._batches[data] = tokenize(self.lm.tokenizer, data)
        return self._batches[data]

    def plan(self, data: DataConfig, plan_key: tuple, needs: Needs) -> None:
        """Announce what a configuration (keyed by its intervention request texts) will need,
        before its pass runs, so that each pass captures everything once."""
        self._planned.setdefault((data, plan_key), Needs()).merge(needs)

    def run(self, data: DataConfig, intervention=BASELINE, needs: Needs | None = None, plan_key: tuple = ()) -> PassResult:
        wanted = self._planned.setdefault((data, plan_key or _plan_key_of(intervention)), Needs())
        wanted.merge(needs or Needs())
        key = (data, intervention)
        cached = self._passes.get(key)
        if cached is None or not cached.needs.covers(wanted):
            if cached is not None:
                wanted.merge(cached.needs)  # a recompute never loses earlier captures
            self._passes[key] = self._forward_in_memory(data, intervention, wanted)
        return self._passes[key]

    def _forward_in_memory(self, data: DataConfig, intervention, planned: Needs) -> PassResult:
        """The pass; out of memory, once more in chunks of half the rows (from scratch: the
        statistics of a failed pass are dropped), then an OutOfMemory error saying what to lower."""
        seq_len = self.batch(data).input_ids.shape[1]
        rows = self.chunk_rows(seq_len, planned.loss, any(name.endswith(".attn.probs") for name in planned.sites))
        tries = [rows, rows // 2] if rows > 1 else [rows]
        for attempt, rows in enumerate(tries):
            if attempt:
                notices.notice(f"{self.lm.name}: out of memory with {tries[0]} sequences a chunk; retrying with {rows}")
            try:
                return self._forward(data, intervention, planned, rows)
            except Exception as exc:
                if not out_of_memory(exc):
                    raise
                error = exc
            release_memory(self.lm.device)
        shape = f"{tries[-1]} sequences x {seq_len} tokens a chunk"
        raise OutOfMemory(
            memory_message(self.lm.name, self.lm.dtype, self.lm.device, f"a forward pass ({shape})", error)
        ) from None

    def holds(self, data: DataConfig, intervention, site_name: str) -> bool:
        cached = self._passes.get((data, intervention))
        return cached is not None and site_name in cached.stats

    def _forward(self, data: DataConfig, intervention, planned: Needs, rows: int) -> PassResult:
        """One pass over the data in chunks of `rows` sequences, capturing what `planned` asks."""
        means = self.means(data, intervention)  # may run the baseline pass first
        lm, batch = self.lm, self.batch(data)
        blocks = {hooks.site(layer, "out") for layer in range(lm.n_layers)}
        needs = Needs().merge(planned).merge(Needs(sites=blocks, medians=blocks))
        captures, accumulators = stat_pairs(needs)
        pooling, pools = pooled_pairs(needs, batch.attention_mask, batch.response_start)
        contributing, contributions = contribution_pairs(needs, {key: down_column(lm, *key) for key in needs.contributions})
        # Without a loss to measure, the decoder alone: no [B, T, vocab] logits (for Gemma 3's 262k
        # vocabulary, most of a pass's time and memory).
        network = lm.model if needs.loss else lm.model.base_model
        losses: list[torch.Tensor] = []
        eager_blocks = {hooks.layer_of(name) for name in needs.sites if name.endswith(".attn.probs")}
        log = EditLog()
        with (
            torch.no_grad(),
            lm.attention(eager_blocks),
            applied(lm, intervention, means, captures + pooling + contributing, log=log) as attached,
        ):
            for start in range(0, batch.input_ids.shape[0], rows):
                mask = batch.attention_mask[start : start + rows]
                width = int(mask.sum(dim=1).max())  # drop all-padding columns of this chunk
                ids = batch.input_ids[start : start + rows, :width].to(lm.device)
                mask = mask[:, :width].to(lm.device)
                output = attached.forward(network, ids, mask, start, use_cache=False)
                if needs.loss:
                    losses.append(token_losses(output.logits, ids, mask))
        self.forward_passes += 1
        loss = torch.cat(losses).cpu().double() if losses else None
        pooled = {key: pool.finish() for key, pool in pools.items()}
        for (name, window), pool in pools.items():
            if pool.overflow:
                raise ActivationOverflow(numerics_message(lm, name, f"window {window}"))
        result = PassResult(finish_all(accumulators), needs, loss, pooled)
        result.identity = log.identity
        result.contributions = {key: acc.finish() for key, acc in contributions.items()}
        return result

    def chunk_rows(self, seq_len: int, logits: bool, attention_weights: bool) -> int:
        if self.batch_size is not None:
            return self.batch_size
        row_bytes = self.lm.activation_bytes(seq_len, logits, attention_weights)
        return rows_per_chunk(row_bytes, self.lm.free_memory(), self.lm.device)

    def means(self, data: DataConfig, intervention) -> dict[str, torch.Tensor]:
        """Baseline position-wise means [T, F] at the sites mean-mode ablations edit."""
        sites = interventions.mean_sites(intervention)
        if not sites:
            return {}
        baseline = self.run(data, BASELINE, Needs(sites=sites))
        return {name: baseline.stats[name].mean() for name in sites}

    def resolve(self, data: DataConfig, requests: list, massive=MASSIVE_RULE) -> tuple:
        """Intervention requests -> canonical intervention (ranking heads, or finding the massive
        cells in the baseline, first if asked)."""
        baseline = self.view(data, BASELINE, massive)
        ranking = None
        if any(r.target == "heads" and r.selection.startswith(("top", "bottom")) for r in requests):
            ranking = rank_heads(readings.head_score_table(baseline, "first"))
        cells = lambda layers, dims: readings.massive_cells(baseline, layers, dims)
        return interventions.resolve(requests, self.lm.n_layers, self.lm.n_heads, ranking, cells)

    def view(
        self,
        data: DataConfig,
        intervention=BASELINE,
        massive=MASSIVE_RULE,
        plan_key: tuple = (),
        sibling: Callable[[str], ConfigView] | None = None,
        vectors: Mapping | None = None,
        steering: Mapping | None = None,
        by_passage: bool = False,
    ) -> ConfigView:
        return ConfigView(self, data, intervention, massive, plan_key, sibling, vectors, steering, by_passage)


def token_losses(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per sequence, next-token losses summed over its real targets, and their count: logits
    [B, T, V] -> [B, 2], on the device (read once per pass; the logits are overwritten)."""
    nll = -target_log_probs(logits[:, :-1].float(), ids[:, 1:])  # [B, T-1]; the logits are consumed
    real = mask[:, 1:].bool()
    return torch.stack([nll.masked_fill(~real, 0.0).sum(dim=1), real.sum(dim=1).float()], dim=1)


def numerics_message(lm: LoadedModel, site_name: str, config: str) -> str:
    dtype = str(lm.dtype).removeprefix("torch.")
    limit = {"float16": "float16 overflows at 65504", "bfloat16": "bfloat16 overflows at ~3.4e38"}.get(
        dtype, f"{dtype} overflowed"
    )
    advice = " - run with --dtype float32 or bfloat16" if dtype == "float16" else ""
    return (
        f"numerics error on {lm.name}: inf/nan activations at {site_name} ({config}) in {dtype}; {limit}{advice}. "
        f"Not a verdict on the claim."
    )


def _plan_key_of(intervention) -> tuple:
    # Passes run directly with a canonical intervention (CLI, tests) plan under its label.
    return (interventions.describe(intervention),) if intervention else ()


class ConfigView:
    """One (model, data, intervention) as measures see it: its captures, read from its shared
    pass (asking for a capture the pass lacks reruns it once with everything planned)."""

    def __init__(
        self,
        session: ModelSession,
        data: DataConfig,
        intervention,
        massive,
        plan_key: tuple = (),
        sibling: Callable[[str], ConfigView] | None = None,
        vectors: Mapping | None = None,
        steering: Mapping | None = None,
        by_passage: bool = False,
    ):
        self.session, self.data, self.intervention, self.plan_key = session, data, intervention, plan_key
        self.min_value, self.min_ratio = massive
        self.lm = session.lm
        self._sibling = sibling
        self.vectors = dict(vectors or {})  # the spec's named vectors: name -> vector_defs.VectorDef
        self.steering = dict(steering or {})  # the spec's steering configurations: name -> steer.SteeringDef
        self.by_passage = by_passage  # units keyed by the passages, not the token ids (a spec across models)

    @property
    def batch(self) -> Batch:
        return self.session.batch(self.data)

    def sibling(self, config: str) -> ConfigView:
        """Another configuration of the same spec (max_rel_diff's `versus`)."""
        if self._sibling is None:
            raise ValueError(f"configuration {config!r} is not known outside a spec")
        return self._sibling(config)

    def vector_def(self, name: str):
        if name not in self.vectors:
            raise ValueError(f"unknown vector {name!r}; defined: {', '.join(sorted(self.vectors)) or 'none'}")
        return self.vectors[name]

    def steering_def(self, name: str):
        if name not in self.steering:
            raise ValueError(f"unknown steering configuration {name!r}; defined: {', '.join(sorted(self.steering)) or 'none'}")
        return self.steering[name]

    def contrast(self, pairs: str) -> ConfigView:
        """The unmodified model on a contrast set (its own pass, shared by every vector on it)."""
        return ConfigView(self.session, contrast.read(pairs).data(), BASELINE, (self.min_value, self.min_ratio))

    def captures(self, sites=(), medians=(), slices=()) -> dict[str, SiteStats]:
        return self._checked(Needs(set(sites), set(medians), False, set(slices)), sites)

    def stats(self, name: str, median: bool = False) -> SiteStats:
        return self.captures([name], [name] if median else [])[name]

    def block(self, layer: int) -> SiteStats:
        return self.stats(hooks.site(layer, "out"), median=True)

    def token_norms(self, name: str, width: int = 0) -> torch.Tensor:
        """[S, T] per token at a site, the mean over its groups of `width` features of their L2
        norms (0: the whole vector's norm); 0 at padding."""
        return self._checked(Needs(norms={(name, width)}), [name])[name].token_norms()

    def exceeding(self, name: str, threshold: float) -> torch.Tensor:
        """[S, F] per sequence and feature at a site: the real tokens with |a| >= threshold."""
        return self._checked(Needs(exceed={(name, threshold)}), [name])[name].exceeding(threshold)

    def _checked(self, needs: Needs, sites) -> dict[str, SiteStats]:
        """The pass's captures, covering `needs`; an inf/nan at one of `sites` is a numerics error,
        never a verdict on the claim."""
        result = self.session.run(self.data, self.intervention, needs, self.plan_key)
        for name in sites:
            if result.stats[name].overflow:
                raise ActivationOverflow(numerics_message(self.lm, name, interventions.describe(self.intervention)))
        return result.stats

    @property
    def identity(self) -> bool:
        """Whether this configuration's intervention changed no value it edited (within float32
        rounding): every number read from it is the baseline's, whatever the claim."""
        if not self.intervention:
            return False
        return self.session.run(self.data, self.intervention, Needs(), self.plan_key).identity

    def captured(self, name: str) -> bool:
        """Whether this configuration's pass already holds a site (asking never recomputes)."""
        return self.session.holds(self.data, self.intervention, name)

    def loss(self) -> Estimate:
        """Mean next-token loss over real targets (token-weighted), resampled by sequence."""
        per_sequence = self.session.run(self.data, self.intervention, Needs(loss=True), self.plan_key).token_loss
        assert per_sequence is not None, "a pass that measured the loss"
        return self.bootstrap.ratio_of_totals(per_sequence[:, 0].numpy(), per_sequence[:, 1].numpy(), self.units())

    # -- sampling units (intervals.py): the data set's sequences
    @property
    def bootstrap(self) -> Bootstrap:
        return self.session.bootstrap

    def units(self) -> Units:
        """The sequences of this view's data (paired across configurations: same key)."""
        kind = "contrast examples" if self.data.whole else "sequences"
        # The key seeds the resamples: the token ids' hash and the file's name, never its path (a
        # checkout elsewhere must draw the same resamples and reproduce the goldens' intervals).
        # Across models the key is the passages' text: the same resamples on both sides (paired).
        name = Path(self.data.dataset).name
        key = f"passages {self.batch.passages_hash}" if self.by_passage else self.batch.ids_hash
        if self.data.whole:  # a contrast set: its examples are resampled by its groups and forms
            labels = contrast.read(self.data.dataset)
            kind = f"contrast examples (resampled by {labels.units_text()})"
            return Units(f"{name}|{key}", int(self.batch.input_ids.shape[0]), kind, labels.factors())
        return Units(f"{name}|{key}", int(self.batch.input_ids.shape[0]), kind)

    def mean(self, per_sequence) -> Estimate:
        """The mean over this view's sequences of a per-sequence value [S], with its replicates."""
        return self.bootstrap.mean(_host(per_sequence), self.units())

    def over_sequences(self, per_sequence, statistic: str = "paper") -> Estimate:
        """A per-sequence value [S] summed up by a measure's statistic: its mean ("paper") or its
        coefficient of variation ("cv_over_sequences"), each with its replicates."""
        if statistic == "cv_over_sequences":
            return self.bootstrap.cv(_host(per_sequence), self.units())
        return self.mean(per_sequence)

    def contributions(self, layer: int, dim: int) -> torch.Tensor:
        """[S, F] per sequence, each MLP unit's contribution to residual dim `dim` of block
        `layer`'s down projection, at the sequence's token where that output peaks."""
        result = self.session.run(self.data, self.intervention, Needs(contributions={(layer, dim)}), self.plan_key)
        return result.contributions[(layer, dim)]

    def pooled(self, window: str, layer: int | None = None) -> torch.Tensor:
        """Per example, the mean block output over the window's tokens: [S, D] at `layer`, or
        [S, L, D] at every layer."""
        result = self.session.run(self.data, self.intervention, Needs(pooled={window}), self.plan_key)
        if layer is not None:
            return result.pooled[(hooks.site(layer, "out"), window)]
        return torch.stack([result.pooled[(hooks.site(L, "out"), window)] for L in range(self.lm.n_layers)], dim=1)


def down_column(lm, layer: int, dim: int) -> torch.Tensor:
    """[F] the weights of block `layer`'s down projection that produce residual dim `dim`."""
    down = hooks.resolve(lm, hooks.site(layer, "mlp.out"))[0]
    weight = models.parameter(down, "weight")
    assert weight is not None, "a down projection has a weight"
    return output_column(weight, dim, lm.adapter.conv1d)


def _host(per_sequence):
    """A per-sequence value [S] as float64 numbers on the host (a tensor, or numbers as they are)."""
    return per_sequence.double().cpu().numpy() if isinstance(per_sequence, torch.Tensor) else per_sequence
