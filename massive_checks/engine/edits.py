"""Interventions as hook functions (hooks.attach): each canonical Ablation becomes one (site,
function) pair that returns an edited copy of the tensor. (An edit of your own is such a function
too, and may read named vectors from HookContext.vectors: tests/test_extending.py.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from massive_checks.engine import weights
from massive_checks.engine.hooks import Attachment, HookContext, HookFn, attach, resolve, site
from massive_checks.engine.models import LoadedModel, parameter
from massive_checks.language.interventions import TARGET_SITE, Ablation

# A user's own targets (massive_checks.api.register_intervention): name -> make(lm, ablation) -> HookFn
USER_EDITS: dict[str, Callable[[LoadedModel, Ablation], HookFn]] = {}


IDENTITY_TOLERANCE = 1e-6  # relative: an edit within float32 rounding of the value it replaces changes nothing


class EditLog:
    """Whether an intervention's edits changed anything during a pass: a flag per edit, kept on
    the device (no synchronisation per hook call) and read once the pass is over."""

    def __init__(self) -> None:
        self._changed: list[torch.Tensor | bool] = []

    def record(self, before: torch.Tensor, after: torch.Tensor) -> None:
        self._changed.append(((after - before).abs() > IDENTITY_TOLERANCE * before.abs()).any())

    @property
    def identity(self) -> bool:
        """Every edit left every value it touched unchanged (and there was at least one edit)."""
        return bool(self._changed) and not any(bool(c) for c in self._changed)


@contextmanager
def applied(
    lm: LoadedModel,
    intervention,
    means: dict | None = None,
    pairs: Sequence = (),
    stop_after: int | None = None,
    log: EditLog | None = None,
) -> Iterator[Attachment]:
    """A canonical intervention in force for the body: its weight edits written (and restored on
    exit), its tensor edits attached before the other (site, function) `pairs` (captures see
    edited tensors). `log` records whether the edits changed anything."""
    with (
        weights.edited(lm, [a for a in intervention if a.target == "weight"], log),
        attach(lm, edit_pairs(lm, intervention, means, log) + list(pairs), stop_after=stop_after) as attached,
    ):
        yield attached


def edit_pairs(
    lm: LoadedModel, intervention, means: dict[str, torch.Tensor] | None = None, log: EditLog | None = None
) -> list[tuple[str, HookFn]]:
    """A canonical intervention (tuple of Ablation) -> (site, edit) pairs.

    means: site -> [T, F] position-wise baseline mean, required by `mean`-mode ablations."""
    pairs = _edit_pairs(lm, intervention, means)
    return pairs if log is None else [(name, _logged(fn, log)) for name, fn in pairs]


def _logged(fn: HookFn, log: EditLog) -> HookFn:
    def call(x: torch.Tensor, context: HookContext) -> torch.Tensor | None:
        new = fn(x, context)
        if new is not None:
            log.record(x, new)
        return new

    return call


def _edit_pairs(lm: LoadedModel, intervention, means: dict[str, torch.Tensor] | None) -> list[tuple[str, HookFn]]:
    pairs = []
    for ablation in intervention:
        if ablation.target == "weight":  # a parameter, not a tensor of the pass: weights.edited
            continue
        name = site(ablation.layer, TARGET_SITE[ablation.target])  # the tensor it edits
        if ablation.target in USER_EDITS:
            pairs.append((name, USER_EDITS[ablation.target](lm, ablation)))
            continue
        mean = None
        if ablation.mode == "mean" and ablation.rows is None:  # #massive carries its own mean value
            if not means or name not in means:
                raise ValueError(f"{ablation.label()} needs the baseline mean at {name}")
            mean = means[name]
        pairs.append((name, _edit(lm, ablation, mean)))
    return pairs


def _edit(lm: LoadedModel, ablation, mean: torch.Tensor | None) -> HookFn:
    """A function (tensor, context) -> edited copy, for one Ablation."""
    # Resolved once here, not on every forward chunk: the output projection's bias ("bias" mode).
    bias = parameter(resolve(lm, site(ablation.layer, "attn.o_in"))[0], "bias") if ablation.mode == "bias" else None

    def replacement(x: torch.Tensor) -> torch.Tensor:  # what the selected entries become
        if ablation.mode == "mean" and ablation.rows is None:
            assert mean is not None, "a mean ablation without the baseline's mean"
            return mean[: x.shape[1]].to(x.device, x.dtype).expand_as(x)  # [T, F] -> [B, T, F]
        if ablation.mode in ("value", "mean"):  # #massive's mean is a value: the massive cells' mean
            return torch.full_like(x, ablation.value)
        if bias is not None:
            return bias.to(x.device, x.dtype).expand_as(x)
        return torch.zeros_like(x)  # zero mode, or "bias" mode on a projection without bias

    def edit(x: torch.Tensor, context: HookContext) -> torch.Tensor:  # x: [B, T, F]
        new = replacement(x)
        if ablation.target in ("attn", "mlp"):
            return new.clone()
        return torch.where(_selected(lm, ablation, x, context), new, x)

    return edit


def _selected(lm: LoadedModel, ablation, x: torch.Tensor, context: HookContext) -> torch.Tensor:
    """[B, T, F] (broadcastable) bool: the entries of x an ablation of heads, dims or neurons edits."""
    B, T, F = x.shape
    units = torch.zeros(F, dtype=torch.bool, device=x.device)
    if ablation.target == "heads":  # F = H * head_dim, head h owns [h*hd, (h+1)*hd)
        for head in ablation.units:
            units[head * lm.head_dim : (head + 1) * lm.head_dim] = True
    else:  # dims or neurons
        units[list(ablation.units)] = True
    if ablation.rows is None and ablation.tokens is None:  # every position
        return units[None, None, :]
    positions = torch.zeros(B, T, dtype=torch.bool, device=x.device)
    if ablation.rows is not None:  # per dataset sequence: this chunk holds rows start..start+B
        for b, tokens in enumerate(ablation.rows[context.start : context.start + B]):
            positions[b, [t for t in tokens if t < T]] = True
    else:
        positions[:, [t for t in ablation.tokens if t < T]] = True
    return positions[:, :, None] & units[None, None, :]
