"""What a forward pass must capture: measures declare it, the session merges it per
(data, intervention) and runs one pass that covers every spec's needs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Needs:
    """What a forward pass must capture. Block outputs (with medians) are always captured."""

    sites: set[str] = field(default_factory=set)
    medians: set[str] = field(default_factory=set)
    loss: bool = False
    slices: set[tuple[str, int]] = field(default_factory=set)  # (site, feature) kept at every token
    pooled: set[str] = field(default_factory=set)  # windows pooled per example at every block output
    # (site, group width): per token, the mean L2 norm of its groups of that many features (0:
    # the whole vector; a head's width: per head). Each site is captured too.
    norms: set[tuple[str, int]] = field(default_factory=set)
    exceed: set[tuple[str, float]] = field(default_factory=set)  # (site, t): per sequence and feature, tokens with |a| >= t
    # (layer, dim): per sequence, each MLP unit's contribution to residual dim `dim` of the down
    # projection's output, at the sequence's token where that output peaks (capture.UnitContributions)
    contributions: set[tuple[int, int]] = field(default_factory=set)

    def covers(self, other: Needs) -> bool:
        return (
            other.sites <= self.sites
            and other.medians <= self.medians
            and other.slices <= self.slices
            and other.pooled <= self.pooled
            and other.norms <= self.norms
            and other.exceed <= self.exceed
            and other.contributions <= self.contributions
            and (self.loss or not other.loss)
        )

    def merge(self, other: Needs) -> Needs:
        self.sites |= other.sites
        self.medians |= other.medians
        self.slices |= other.slices
        self.pooled |= other.pooled
        self.norms |= other.norms
        self.exceed |= other.exceed
        self.contributions |= other.contributions
        self.loss = self.loss or other.loss
        return self
