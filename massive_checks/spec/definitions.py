"""Typed values a spec is parsed into, shared by the spec language and the engine, without torch:
what a pass captures, token windows and steering definitions. spec/language.py builds them once from a spec's text; capture.py
and steer.py compute with them (and re-export them)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from ..lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")


@dataclass
class Needs:
    """What a forward pass must capture. Block outputs (with medians) are always captured."""

    sites: set[str] = field(default_factory=set)
    medians: set[str] = field(default_factory=set)
    loss: bool = False
    slices: set[tuple[str, int]] = field(default_factory=set)  # (site, feature) kept at every token
    pooled: set[str] = field(default_factory=set)  # windows pooled per example at every block output

    def covers(self, other: "Needs") -> bool:
        return (
            other.sites <= self.sites
            and other.medians <= self.medians
            and other.slices <= self.slices
            and other.pooled <= self.pooled
            and (self.loss or not other.loss)
        )

    def merge(self, other: "Needs") -> "Needs":
        self.sites |= other.sites
        self.medians |= other.medians
        self.slices |= other.slices
        self.pooled |= other.pooled
        self.loss = self.loss or other.loss
        return self


_WINDOW = re.compile(r"^(?:(last|first):([1-9][0-9]*)|(all))$")


@dataclass(frozen=True)
class Window:
    """Which tokens of each example a pooled capture averages. Position 0 (where start-token
    massive activations sit) is never in a window.
      last:K   the last K real tokens
      first:K  the first K tokens of the response (of the text after position 0 without a prompt)
      all      every real token after position 0"""

    kind: str
    k: int = 0

    @classmethod
    def parse(cls, text: str) -> "Window":
        match = _WINDOW.match(str(text))
        if not match:
            raise ValueError(f"window {text!r}: write last:K, first:K (K >= 1) or all")
        return cls("all") if match.group(3) else cls(match.group(1), int(match.group(2)))

    def text(self) -> str:
        return "all" if self.kind == "all" else f"{self.kind}:{self.k}"

    def mask(self, mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: the window's tokens. mask [B, T] 1 = real; response_start [B]."""
        positions = torch.arange(mask.shape[1], device=mask.device)[None, :]  # [1, T]
        real = mask.bool() & (positions >= 1)
        if self.kind == "all":
            return real
        if self.kind == "last":
            lengths = mask.sum(dim=1, keepdim=True)  # right-padded: real tokens are 0 .. length-1
            return real & (positions >= lengths - self.k)
        start = response_start.to(mask.device)[:, None]
        return real & (positions >= start) & (positions < start + self.k)

    def require_tokens(self, mask: torch.Tensor, response_start: torch.Tensor) -> None:
        """Checked before a pass (mask [S, T], response_start [S]): every example has a token."""
        empty = (self.mask(mask, response_start).sum(dim=1) == 0).nonzero()
        if len(empty):
            raise ValueError(f"example {int(empty[0]) + 1} has no token in window {self.text()}")


Position = Literal["all", "prompt", "generated"]
POSITIONS: tuple[str, ...] = get_args(Position)
PROMPTS, MAX_NEW_TOKENS = 60, 32  # a steering configuration's defaults


Calibrated = Literal["calibrated", "calibrated_without_massive"]  # the two C15 base coefficients
CALIBRATED: tuple[str, ...] = get_args(Calibrated)


@dataclass(frozen=True)
class Sweep:
    """Coefficients start x factor^k for k = -steps..steps: geometric steps both ways from a start
    (a number, or a calibrated base coefficient: `calibrated`, `calibrated_without_massive`)."""

    start: str | float
    factor: float
    steps: int

    def coefs(self, start: float) -> tuple[float, ...]:
        return tuple(start * self.factor**k for k in range(-self.steps, self.steps + 1))


@dataclass(frozen=True)
class SteeringDef:
    """A spec's named steering configuration: a named vector added after block `layer` (default:
    the vector's own) at explicit `coefs` or a `sweep`, on the first `prompts` evaluation prompts
    of `prompt_set` (default: the built-in set named like the vector's contrast set) with
    `max_new_tokens` greedy tokens; `judge` names the trait judge (default: the contrast set's,
    judges.DEFAULT_FOR_SET), `judge_model` the coherence judge (default: the session's); `threshold`
    is the coherence a coefficient needs to count (the seed's 70); `trait` = (pos words, neg words)
    of trait_logit (default: the built-in set's own, contrast.TRAITS)."""

    vector: str
    coefs: tuple[float, ...] = ()
    sweep: Sweep | None = None
    layer: int | None = None
    positions: str = "all"
    first: bool = False
    prompts: int = PROMPTS
    max_new_tokens: int = MAX_NEW_TOKENS
    threshold: float = 70.0
    trait: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    judge: str | None = None
    judge_model: str | None = None
    prompt_set: str | None = None
