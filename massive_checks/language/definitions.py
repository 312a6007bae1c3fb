"""Typed values a spec is parsed into, shared by the spec language and the engine, without torch:
token windows and steering definitions.

The values a spec writes are frozen pydantic models (`Frozen`): the schema validates YAML into
them once, and the engine computes with the same objects (no schema twin to convert by hand).
Their JSON Schema is what a spec file may write; capture.py and steer.py re-export them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from massive_checks.base.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")


class Frozen(BaseModel):
    """A value written in a spec: strict types (no "5" for 5, no true for 1), finite numbers,
    unknown keys refused, immutable and hashable once built."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# A YAML list held as a tuple (hashable): last in Annotated[tuple[X, ...], Field(..), AS_TUPLE], so that
# the length constraints stay on the tuple (and its JSON Schema is the list's).
AS_TUPLE = BeforeValidator(_as_tuple)


Number = float  # strict: ints and floats, finite, never booleans
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", max_length=200)]
ModelName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_.@/-]+$", max_length=300)
]  # as given to --model (hub ids have a /)
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Index = Annotated[int, Field(ge=0)]


WINDOW_PATTERN = r"^((last|first):[1-9][0-9]*|all)$"  # last:K | first:K | all
_WINDOW = re.compile(WINDOW_PATTERN)
WindowText = Annotated[str, StringConstraints(pattern=WINDOW_PATTERN)]  # a window as a spec writes it (canonical)


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
    def parse(cls, text: str) -> Window:
        match = _WINDOW.match(str(text))
        if not match:
            raise ValueError(f"window {text!r}: write last:K, first:K (K >= 1) or all")
        kind, _, k = match.group(1).partition(":")
        return cls(kind, int(k) if k else 0)

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


class Sweep(Frozen):
    """Coefficients start x factor^k, k = -steps..steps (geometric steps both ways from the start)."""

    start: Calibrated | Annotated[Number, Field(gt=0)]  # a number or a calibrated base coefficient
    factor: Annotated[Number, Field(gt=1, le=100)] = 1.25
    steps: Annotated[int, Field(ge=1, le=20)] = 4

    def coefs(self, start: float) -> tuple[float, ...]:
        return tuple(start * self.factor**k for k in range(-self.steps, self.steps + 1))


class Search(Frozen):
    """A search for the strongest coherent coefficient (claims C15-C18, the seed's "best delta at
    coherence >= 70"), on the first `prompts` evaluation prompts, over the grid base x factor^k:
    from its first rung, k = k0, k0 + 1, .., up to and including the first coefficient whose
    coherence falls below the configuration's threshold (the coherence cliff), or, without a
    cliff, up to `limit` x the calibrated coefficient without the massive dims (the search says it
    found none). It also steps down from the first rung (at most `down` steps) until its two lowest
    rungs are quiet: coherent, and neither moves the trait score by more than half a prompt's
    worth (50 / prompts), so the sweep starts below any effect and below its cliff. The best
    coherent coefficient it finds, and any `coefs`, are then scored on the other prompts.

    The grid: from `start` (base = start, k0 = 0), or by default base = 1/8 of the calibrated
    coefficient without the massive dims and k0 its last rung at or below half that coefficient
    (k0 = 3 at x1.5: 0.42x); the rungs below it are run only while needed, so a search pays for
    no rung far below its effect."""

    start: Annotated[Number, Field(gt=0)] | None = None  # default: the grid calibrated_without_massive/8 x factor^k at k0
    factor: Annotated[Number, Field(gt=1, le=1.5)] = 1.5
    prompts: Annotated[int, Field(ge=2, le=500)] = 12
    limit: Annotated[Number, Field(gt=0)] = 8.0
    down: Annotated[int, Field(ge=0, le=20)] = 8

    def grid(self, scale: float) -> tuple[float, int]:
        """(base, k0): the search runs base x factor^k from rung k0; scale: the calibrated
        coefficient without the massive dims."""
        if self.start is not None:
            return float(self.start), 0
        return scale / 8, math.floor(math.log(4) / math.log(self.factor) + 1e-9)  # factor^k0 <= 4: at most scale/2


class Trait(Frozen):
    """Trait (pos) and anti-trait (neg) continuations whose log-odds at the response start score it."""

    pos: Annotated[tuple[NonEmpty, ...], Field(min_length=1), AS_TUPLE]
    neg: Annotated[tuple[NonEmpty, ...], Field(min_length=1), AS_TUPLE]


class SteeringDef(Frozen):
    """A steering configuration: a named vector's unit direction x coef after a block, swept over
    coefficients, its generated text judged for trait and coherence on held-out evaluation prompts."""

    vector: Name
    coefs: Annotated[tuple[Annotated[Number, Field(gt=0)] | Calibrated, ...], Field(min_length=1), AS_TUPLE] = ()
    sweep: Sweep | None = None
    search: Search | None = None
    layer: Index | None = None  # default: the vector's layer
    positions: Position = "all"
    first: bool = False  # steer position 0 too
    prompts: Annotated[int, Field(ge=1, le=1000)] = PROMPTS
    prompt_set: NonEmpty | None = None  # built-in set or file; default: the vector's contrast set's name
    max_new_tokens: Annotated[int, Field(ge=1, le=512)] = MAX_NEW_TOKENS
    threshold: Annotated[Number, Field(ge=0, le=100)] = 70.0  # coherence a coefficient needs to count (the seed's 70)
    trait: Trait | None = None  # trait_logit's words; default: the built-in set's own (contrast.TRAITS)
    judge: NonEmpty | None = None  # trait judge: vader | refusal | entry point | module:function
    judge_model: ModelName | None = None  # coherence judge; default: --judge-model, else the other bundled model
