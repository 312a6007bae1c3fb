"""The steering edit: coef x unit vector added to the residual stream after a block, at the chosen
positions (all real tokens, the prompt, or the generated tokens; position 0 only with first: true).
coef 0 leaves the model's outputs bit-identical."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from massive_checks.engine import hooks
from massive_checks.engine.hooks import HookContext, HookFn
from massive_checks.engine.models import LoadedModel


@dataclass(frozen=True)
class Steering:
    """Where and how much: block `layer`'s output, `coef` a float or one per batch row [B]."""

    layer: int
    coef: float | torch.Tensor
    positions: str = "all"  # all | prompt | generated
    first: bool = False  # steer position 0 too


def steer_edit(steering: Steering, vector: torch.Tensor) -> HookFn:
    """x + coef x vector / ||vector|| at the chosen positions. x: [B, T, D]; vector [D] or one per
    row [B, D]; coef a float or [B]."""
    unit = (vector / vector.norm(dim=-1, keepdim=True)).float()  # [D] or [B, D]
    coef = torch.as_tensor(steering.coef, dtype=torch.float32)
    offset = coef[..., None] * unit  # [D] or [B, D]
    offset = offset[:, None, :] if offset.dim() == 2 else offset  # [B, 1, D] or [D]

    def edit(x: torch.Tensor, context: HookContext) -> torch.Tensor:
        chosen = chosen_positions(context, steering).to(x.device)  # [B, T]
        return x + offset.to(x.device, x.dtype) * chosen[..., None].to(x.dtype)

    return edit


def chosen_positions(context: HookContext, steering: Steering) -> torch.Tensor:
    """[B, T] bool: the real tokens the steering acts on."""
    positions = context.absolute_positions().to(context.mask.device)
    chosen = context.mask.bool()
    if steering.positions != "all":
        if context.prompt_length is None:
            raise ValueError(f"steering at {steering.positions!r} positions needs each prompt's length")
        in_prompt = positions < context.prompt_length.to(positions.device)[:, None]
        chosen = chosen & (in_prompt if steering.positions == "prompt" else ~in_prompt)
    if not steering.first:
        chosen = chosen & (positions > 0)
    return chosen


def steered(lm: LoadedModel, steering: Steering | None, vector: torch.Tensor | None):
    """hooks.attach with the steering edit (nothing attached for None)."""
    if steering is None or vector is None:
        return hooks.attach(lm, [])
    pairs = [(hooks.site(steering.layer, "out"), steer_edit(steering, vector))]
    return hooks.attach(lm, pairs)
