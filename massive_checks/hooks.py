"""The one place that touches modules: canonical site names, statistics captured inside forward
hooks, and interventions. Every hook lives inside a context manager that removes it on exit,
also when the body raises.

Sites (L = 0-based block index):
  blocks.L.out           residual stream after block L            [B, T, D]
  blocks.L.attn.out      attention output, before the residual add [B, T, D]
  blocks.L.attn.o_in     input of the attention output projection  [B, T, H*hd] (heads side by side)
  blocks.L.attn.probs    attention weights (eager attention)       [B, H, T, T]
  blocks.L.mlp.in        MLP input (after the pre-MLP norm)        [B, T, D]
  blocks.L.mlp.up        up / fc projection output                 [B, T, F]
  blocks.L.mlp.gate      gate projection output (gated MLPs only)  [B, T, F]
  blocks.L.mlp.act       activation function output                [B, T, F]
  blocks.L.mlp.down_in   input of the down projection              [B, T, F]
  blocks.L.mlp.out       down projection output = MLP output       [B, T, D]
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from .interventions import TARGET_SITE
from .models import LoadedModel

SITE_PATTERN = re.compile(
    r"^blocks\.(\d+)\.(out|attn\.out|attn\.o_in|attn\.probs|mlp\.in|mlp\.up|mlp\.gate|mlp\.act|mlp\.down_in|mlp\.out)$"
)
# site suffix -> (adapter field, which tensor of the hook call: "out", "out0", "out1" or "in")
_WHERE = {
    "out": ("blocks", "out0"), "attn.out": ("attn", "out0"), "attn.probs": ("attn", "out1"),
    "attn.o_in": ("o_proj", "in"), "mlp.in": ("up", "in"), "mlp.up": ("up", "out"),
    "mlp.gate": ("gate", "out"), "mlp.act": ("act", "out"), "mlp.down_in": ("down", "in"),
    "mlp.out": ("down", "out"),
}


def site(layer: int, name: str) -> str:
    return f"blocks.{layer}.{name}"


def resolve(lm: LoadedModel, site_name: str) -> tuple[torch.nn.Module, str]:
    """Site name -> (module, which tensor). Raises ValueError naming valid sites."""
    match = SITE_PATTERN.match(site_name)
    if not match:
        raise ValueError(f"unknown site {site_name!r}; valid: blocks.<L>.({'|'.join(_WHERE)})")
    layer, suffix = int(match.group(1)), match.group(2)
    if layer >= lm.n_layers:
        raise ValueError(f"site {site_name!r}: {lm.name} has {lm.n_layers} blocks (0-{lm.n_layers - 1})")
    field_name, which = _WHERE[suffix]
    path = getattr(lm.adapter, field_name)
    if path is None:
        raise ValueError(f"site {site_name!r}: {lm.adapter.family} has no gated MLP")
    path = f"{path}.{layer}" if field_name == "blocks" else path.format(L=layer)
    return lm.module(path), which


@contextmanager
def hooks_removed_on_exit() -> Iterator[list]:
    handles: list = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def _attach(lm: LoadedModel, module: torch.nn.Module, which: str, fn: Callable[[torch.Tensor], torch.Tensor | None]):
    """Run fn on the chosen tensor; if fn returns a tensor, it replaces that tensor."""
    fn = _as_batch_major(lm, fn)
    if which == "in":
        def pre_hook(_module, args):
            new = fn(args[0])
            return None if new is None else (new, *args[1:])
        pre_hook.massive_checks = True
        return module.register_forward_pre_hook(pre_hook)

    def hook(_module, _args, output):
        is_tuple = isinstance(output, tuple)
        index = 1 if which == "out1" else 0
        tensor = output[index] if is_tuple else output
        new = fn(tensor)
        if new is None:
            return None
        return (*output[:index], new, *output[index + 1:]) if is_tuple else new
    hook.massive_checks = True
    return module.register_forward_hook(hook)


# --------------------------------------------------------------------------- capture


@dataclass
class SiteStats:
    """Statistics of |a| at one site, accumulated over forward chunks; padding excluded.

    Hidden-like sites ([B, T, F]):
      cell_max [T, F]  max |a| over sequences at each (token, feature)
      total    [T, F]  sum of a (signed) over sequences; count [T] sequences per position
      seq_top  [B]x3   per sequence: top-1 |a|, its feature, its token
      seq_median [B]   per sequence median |a| over its real tokens (only where requested)
    Attention probability sites ([B, H, T, T]):
      key_attn [B, H, T]  per sequence, mean attention paid to key k by queries q > k
    """

    cell_max: torch.Tensor | None = None
    total: torch.Tensor | None = None
    count: torch.Tensor | None = None
    seq_top: list = field(default_factory=list)  # [(values [B], features [B], tokens [B])]
    seq_median: list = field(default_factory=list)
    key_attn: list = field(default_factory=list)
    overflow: bool = False  # an inf/nan was seen (fp16 tops out at 65504)

    def add_hidden(self, act: torch.Tensor, mask: torch.Tensor, with_median: bool) -> None:
        act = act.detach()
        valid = mask.to(act.dtype).unsqueeze(-1)  # [B, T, 1]
        magnitude = act.abs().float() * valid  # padding -> 0, never a maximum
        cell_max = magnitude.amax(dim=0)  # [T, F]
        self.overflow = self.overflow or not bool(torch.isfinite(cell_max).all())
        total = (act.float() * valid).sum(dim=0)
        count = mask.sum(dim=0).float()  # [T]
        self.cell_max = cell_max if self.cell_max is None else _merge_max(self.cell_max, cell_max)
        self.total = total if self.total is None else _merge_sum(self.total, total)
        self.count = count if self.count is None else _merge_sum(self.count, count)
        per_token_max, per_token_arg = magnitude.max(dim=-1)  # [B, T]
        top_values, top_tokens = per_token_max.max(dim=-1)  # [B]
        top_features = per_token_arg.gather(1, top_tokens[:, None]).squeeze(1)
        self.seq_top.append((top_values.cpu(), top_features.cpu(), top_tokens.cpu()))
        if with_median:  # the costly one: only at sites a measure needs
            lengths = mask.sum(dim=1).tolist()
            self.seq_median.append(torch.stack([
                magnitude[b, :n].flatten().median() for b, n in enumerate(lengths)
            ]).cpu())

    def add_probs(self, probs: torch.Tensor, mask: torch.Tensor) -> None:
        probs = probs.detach().float()  # [B, H, Tq, Tk]
        T = probs.shape[-1]
        later = torch.ones(T, T, device=probs.device).tril(diagonal=-1)  # [q, k]: q > k
        valid_q = mask.float()[:, None, :, None]  # [B, 1, Tq, 1]
        weight = later[None, None] * valid_q
        sums = (probs * weight).sum(dim=2)  # [B, H, Tk]
        n_queries = weight.sum(dim=2).clamp(min=1)  # [B, 1, Tk]
        self.key_attn.append((sums / n_queries).cpu())

    # -------- finished views (cpu tensors)
    def mean(self) -> torch.Tensor:  # [T, F] position-wise mean over sequences
        return self.total / self.count.clamp(min=1)[:, None]

    def top(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(torch.cat(parts) for parts in zip(*self.seq_top))

    def median(self) -> torch.Tensor:  # [B]
        return torch.cat(self.seq_median)

    def attention_to_keys(self) -> torch.Tensor:  # [B, H, T]
        width = max(part.shape[-1] for part in self.key_attn)
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[-1])) for p in self.key_attn])


def _merge_max(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = _pad_to_same(a, b)
    return torch.maximum(a, b)


def _merge_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = _pad_to_same(a, b)
    return a + b


def _pad_to_same(a, b):  # chunks may differ in length T (dim 0)
    T = max(a.shape[0], b.shape[0])
    pad = lambda x: torch.nn.functional.pad(x, (0, 0) * (x.dim() - 1) + (0, T - x.shape[0]))
    return pad(a), pad(b)


class Recorder:
    """Holds the statistics of one capture; `mask` is set before each forward chunk."""

    def __init__(self, sites: list[str]):
        self.stats = {name: SiteStats() for name in sites}
        self.mask: torch.Tensor | None = None  # [B, T]

    def finish(self) -> dict[str, SiteStats]:
        for stats in self.stats.values():
            for name in ("cell_max", "total", "count"):
                value = getattr(stats, name)
                if value is not None:
                    setattr(stats, name, value.cpu())
        return self.stats


def _as_batch_major(lm: LoadedModel, fn):
    """Some MLPs (OPT) run on flattened tokens [B*T, F]: present them as [B, T, F]."""
    def wrapped(tensor):
        if tensor is None or tensor.dim() != 2:
            return fn(tensor)
        new = fn(tensor.view(*lm.batch_shape, tensor.shape[-1]))
        return None if new is None else new.reshape(tensor.shape)
    return wrapped


@contextmanager
def capture(lm: LoadedModel, sites: list[str], median_sites: set[str] = frozenset()) -> Iterator[Recorder]:
    """Capture statistics at `sites` during the forward passes run inside the block."""
    recorder = Recorder(sites)
    with hooks_removed_on_exit() as handles:
        for name in sites:
            module, which = resolve(lm, name)
            handles.append(_attach(lm, module, which, _stat_hook(recorder, name, name in median_sites)))
        yield recorder


def _stat_hook(recorder: Recorder, name: str, with_median: bool):
    def on_tensor(tensor: torch.Tensor) -> None:
        stats = recorder.stats[name]
        if name.endswith("attn.probs"):
            if tensor is None:
                raise RuntimeError("attention weights are None: load the model with eager attention")
            stats.add_probs(tensor, recorder.mask.to(tensor.device))
        else:
            stats.add_hidden(tensor, recorder.mask.to(tensor.device), with_median)
        return None
    return on_tensor


def hook_count(module: torch.nn.Module) -> int:
    """massive_checks hooks still registered in the module tree (0 after every context exits).
    Hooks that transformers installs itself are not counted."""
    return sum(getattr(fn, "massive_checks", False)
               for m in module.modules() for fn in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()])


# --------------------------------------------------------------------------- interventions



@contextmanager
def intervene(lm: LoadedModel, intervention, means: dict[str, torch.Tensor] | None = None) -> Iterator[None]:
    """Apply a canonical intervention (tuple of Ablation) for the forward passes in the block.

    means: site -> [T, F] position-wise baseline mean, required by `mean`-mode ablations.
    Register these hooks *before* capture hooks so captures see the edited tensors."""
    with hooks_removed_on_exit() as handles:
        for ablation in intervention:
            name = site(ablation.layer, TARGET_SITE[ablation.target])  # the tensor it edits
            module, which = resolve(lm, name)
            mean = None
            if ablation.mode == "mean":
                if not means or name not in means:
                    raise ValueError(f"{ablation.label()} needs the baseline mean at {name}")
                mean = means[name]
            handles.append(_attach(lm, module, which, _edit(lm, ablation, mean)))
        yield


def _edit(lm: LoadedModel, ablation, mean: torch.Tensor | None):
    """A function tensor -> edited copy, for one Ablation."""
    # Resolved once here, not on every forward chunk: the output projection's bias ("bias" mode).
    bias = getattr(resolve(lm, site(ablation.layer, "attn.o_in"))[0], "bias", None) if ablation.mode == "bias" else None

    def replacement(x: torch.Tensor) -> torch.Tensor:  # what the selected entries become
        if ablation.mode == "mean":
            return mean[: x.shape[1]].to(x.device, x.dtype).expand_as(x)  # [T, F] -> [B, T, F]
        if ablation.mode == "value":
            return torch.full_like(x, ablation.value)
        if bias is not None:
            return bias.to(x.dtype).expand_as(x)
        return torch.zeros_like(x)  # zero mode, or "bias" mode on a projection without bias

    def edit(x: torch.Tensor) -> torch.Tensor:  # x: [B, T, F]
        new = replacement(x)
        if ablation.target in ("attn", "mlp"):
            return new.clone()
        selected = torch.zeros(x.shape[1:], dtype=torch.bool, device=x.device)  # [T, F]
        if ablation.target == "heads":  # F = H * head_dim, head h owns [h*hd, (h+1)*hd)
            hd = lm.head_dim
            for head in ablation.units:
                selected[:, head * hd:(head + 1) * hd] = True
        else:  # dims or neurons
            selected[:, list(ablation.units)] = True
        if ablation.tokens is not None:
            keep_rows = torch.ones(x.shape[1], dtype=torch.bool, device=x.device)
            keep_rows[[t for t in ablation.tokens if t < x.shape[1]]] = False
            selected[keep_rows] = False
        return torch.where(selected, new, x)

    return edit
