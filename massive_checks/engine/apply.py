"""Interventions and captures around your own forward calls (the plugin's `ablate` and
`capture_stats` fixtures, and Python use), built on hooks.attach like the suite's passes:

    with ablate(lm, "heads:5.1,6.1", "mlp:2"):
        lm.model(**inputs)
    with capture_stats(lm, ["blocks.3.out"], median_sites={"blocks.3.out"}) as captured:
        lm.model(**inputs)
    captured["blocks.3.out"].dim_max()    # [S, D]

Forward calls made directly see every token as real; pass `mask` to exclude padding."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from massive_checks.engine.capture import SiteStats, finish_all, stat_pairs
from massive_checks.engine.edits import applied
from massive_checks.engine.hooks import last_layer
from massive_checks.engine.models import LoadedModel
from massive_checks.engine.needs import Needs
from massive_checks.engine.session import ModelSession
from massive_checks.language import interventions
from massive_checks.language.data import DataConfig


@contextmanager
def intervene(lm: LoadedModel, intervention, means: dict | None = None) -> Iterator:
    """Attach a canonical intervention's edits (means: site -> [T, F] for =mean ablations);
    yields the hooks.Attachment (its `forward` runs a chunk with its padding mask)."""
    with applied(lm, intervention, means) as attached:
        yield attached


@contextmanager
def ablate(lm: LoadedModel, *texts: str, data: DataConfig | None = None) -> Iterator[tuple]:
    """Apply intervention strings to every forward pass in the block; yields the canonical
    intervention. Ranked heads, #massive cells and =mean take their numbers from `data`."""
    session, data = ModelSession(lm), data or DataConfig()
    intervention = session.resolve(data, [interventions.parse(t) for t in texts])
    with intervene(lm, intervention, session.means(data, intervention)):
        yield intervention


@contextmanager
def capture_stats(
    lm: LoadedModel,
    sites: list[str],
    median_sites=frozenset(),
    slices: dict | None = None,
    intervention=(),
    stop_early: bool = False,
) -> Iterator[dict[str, SiteStats]]:
    """Statistics at `sites` of the forward passes in the block (padding excluded when the call
    goes through `forward`); with `intervention` (canonical), edits are attached first.
    stop_early: calls through `forward` end after the deepest site's block and return None (no
    later blocks, no logits: for early layers of a large model, most of the cost)."""
    needs = Needs(set(sites), set(median_sites), False, {(s, d) for s, dims in (slices or {}).items() for d in dims})
    pairs, accumulators = stat_pairs(needs)
    stop = last_layer(needs.sites) if stop_early and needs.sites else None
    with applied(lm, intervention, pairs=pairs, stop_after=stop) as attached:
        yield _Captured(accumulators, attached)
    finish_all(accumulators)


class _Captured(dict):
    """{site: SiteStats}, plus forward(network, ids, mask, start) to run with padding known."""

    def __init__(self, accumulators: dict, attached):
        super().__init__(accumulators)
        self._attached = attached

    def forward(self, network: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, start: int = 0, **kwargs):
        return self._attached.forward(network, input_ids, mask, start, **kwargs)
