"""The one place that touches modules: canonical site names, statistics captured inside forward
hooks, and interventions. Every hook lives inside a context manager that removes it on exit,
also when the body raises.

Sites (L = 0-based block index):
  blocks.L.out           residual stream after block L            [B, T, D]
  blocks.L.attn.out      attention output (the attention module's)  [B, T, D]
  blocks.L.attn.resid    what attention adds to the residual stream [B, T, D]: attn.out, or for
                         Gemma 2/3 its post_attention_layernorm (RMSNorm(attn.out) x weight)
  blocks.L.attn.o_in     input of the attention output projection  [B, T, H*hd] (heads side by side)
  blocks.L.attn.probs    attention weights (eager attention)       [B, H, T, T]
  blocks.L.mlp.in        MLP input (after the pre-MLP norm)        [B, T, D]
  blocks.L.mlp.up        up / fc projection output                 [B, T, F]
  blocks.L.mlp.gate      gate projection output (gated MLPs only)  [B, T, F]
  blocks.L.mlp.act       activation function output                [B, T, F]
  blocks.L.mlp.down_in   input of the down projection              [B, T, F]
  blocks.L.mlp.out       down projection output = MLP output       [B, T, D]
  blocks.L.mlp.resid     what the MLP adds to the residual stream  [B, T, D]: mlp.out, or for
                         Gemma 2/3 its post_feedforward_layernorm
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
    r"^blocks\.(\d+)\.(out|attn\.out|attn\.resid|attn\.o_in|attn\.probs|mlp\.in|mlp\.up|mlp\.gate|mlp\.act|mlp\.down_in"
    r"|mlp\.out|mlp\.resid)$"
)
# site suffix -> (adapter field, which tensor of the hook call: "out", "out0", "out1" or "in")
_WHERE = {
    "out": ("blocks", "out0"), "attn.out": ("attn", "out0"), "attn.probs": ("attn", "out1"),
    "attn.o_in": ("o_proj", "in"), "mlp.in": ("up", "in"), "mlp.up": ("up", "out"),
    "mlp.gate": ("gate", "out"), "mlp.act": ("act", "out"), "mlp.down_in": ("down", "in"),
    "mlp.out": ("down", "out"), "attn.resid": ("attn_resid", "out0"), "mlp.resid": ("mlp_resid", "out"),
}
_RESID_FALLBACK = {"attn_resid": ("attn", "out0"), "mlp_resid": ("down", "out")}  # no post-norm: the output itself


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
    if field_name in _RESID_FALLBACK and getattr(lm.adapter, field_name) is None:
        field_name, which = _RESID_FALLBACK[field_name]
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


SEQ_CELLS = 32  # per sequence, the largest cells kept: the massive rule is applied to these


@dataclass
class SiteStats:
    """Statistics of |a| at one site, accumulated over forward chunks; padding excluded.

    Hidden-like sites ([B, T, F]):
      cell_max [T, F]   max |a| over sequences at each (token, feature)
      total    [T, F]   sum of a (signed) over sequences; count [T] sequences per position
      seq_dim_max [S, F]  per sequence: max |a| of each feature over its real tokens
      seq_token_max [S, T] per sequence: max |a| over features at each real token (0 at padding)
      slices {f: [S, T]}  signed a of a few requested features at every token (0 at padding)
      seq_cells  [S, K]x4 per sequence: its K largest cells of the flattened |a| (values,
                 features, tokens, signed values), largest first
      seq_median [S]    per sequence median of the flattened |a| of its real tokens (only where
                        requested)
    Attention probability sites ([B, H, T, T]):
      key_attn [S, H, T]  per sequence, mean attention paid to key k by queries q > k
    (S: every sequence of the dataset, in order.)
    """

    cell_max: torch.Tensor | None = None
    total: torch.Tensor | None = None
    count: torch.Tensor | None = None
    seq_dim_max: list = field(default_factory=list)
    seq_token_max: list = field(default_factory=list)
    seq_slices: list = field(default_factory=list)  # [(features tuple, [B, T, n] signed)]
    seq_cells: list = field(default_factory=list)  # [(values, features, tokens, signed) each [B, K]]
    seq_median: list = field(default_factory=list)
    key_attn: list = field(default_factory=list)
    overflow: bool = False  # an inf/nan was seen (fp16 tops out at 65504)

    def add_hidden(self, act: torch.Tensor, mask: torch.Tensor, with_median: bool, slice_dims: tuple = ()) -> None:
        act = act.detach()
        valid = mask.bool().unsqueeze(-1)  # [B, T, 1]
        magnitude = act.abs().float().masked_fill(~valid, 0.0)  # padding -> 0, never a maximum
        cell_max = magnitude.amax(dim=0)  # [T, F]
        self.overflow = self.overflow or not bool(torch.isfinite(cell_max).all())
        total = act.float().masked_fill(~valid, 0.0).sum(dim=0)
        count = mask.sum(dim=0).float()  # [T]
        self.cell_max = cell_max if self.cell_max is None else _merge_max(self.cell_max, cell_max)
        self.total = total if self.total is None else _merge_sum(self.total, total)
        self.count = count if self.count is None else _merge_sum(self.count, count)
        self.seq_dim_max.append(magnitude.amax(dim=1).cpu())  # [B, F]
        self.seq_token_max.append(magnitude.amax(dim=2).cpu())  # [B, T]
        if slice_dims:
            self.seq_slices.append((slice_dims, act[..., list(slice_dims)].float().masked_fill(~valid, 0.0).cpu()))
        width = act.shape[-1]
        values, flat = magnitude.flatten(1).topk(min(SEQ_CELLS, magnitude[0].numel()), dim=1)  # [B, K]
        signed = act.float().flatten(1).gather(1, flat)
        self.seq_cells.append(tuple(t.cpu() for t in (values, flat % width, flat // width, signed)))
        if with_median:  # one batched call: padding is NaN, which nanmedian skips
            flat_nan = act.abs().float().masked_fill(~valid, float("nan")).flatten(1)  # [B, T*F]
            self.seq_median.append(flat_nan.nanmedian(dim=1).values.cpu())

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

    def cells(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sequence, its K largest cells: (|a|, feature, token, signed a), each [S, K]."""
        return tuple(torch.cat(parts) for parts in zip(*self.seq_cells))

    def top(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sequence, its top-1 cell: (|a| [S], feature [S], token [S])."""
        values, features, tokens, _ = self.cells()
        return values[:, 0], features[:, 0], tokens[:, 0]

    def dim_max(self) -> torch.Tensor:  # [S, F]
        return torch.cat(self.seq_dim_max)

    def token_max(self) -> torch.Tensor:  # [S, T] (T: the longest chunk; padding 0)
        return _cat_padded(self.seq_token_max)

    def slice(self, dim: int) -> torch.Tensor:  # [S, T] signed a of one captured feature
        return _cat_padded([part[..., dims.index(dim)] for dims, part in self.seq_slices])

    def median(self) -> torch.Tensor:  # [S]
        return torch.cat(self.seq_median)

    def attention_to_keys(self) -> torch.Tensor:  # [S, H, T]
        width = max(part.shape[-1] for part in self.key_attn)
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[-1])) for p in self.key_attn])


def _cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate [B, T_i] chunks along B, padding each to the longest T with zeros."""
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])


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


@dataclass(frozen=True)
class Chunk:
    """The forward chunk running now, as hooks see it: its attention mask [B, T] (1 = real
    token) and the dataset index of its first sequence (for per-sequence edits)."""

    mask: torch.Tensor
    start: int = 0


@contextmanager
def forward_chunk(lm: LoadedModel, mask: torch.Tensor, start: int = 0) -> Iterator[Chunk]:
    """Tell the hooks which chunk the forward passes inside the block run on."""
    lm.chunk = Chunk(mask, start)
    try:
        yield lm.chunk
    finally:
        lm.chunk = None


class Recorder:
    """Holds the statistics of one capture."""

    def __init__(self, sites: list[str]):
        self.stats = {name: SiteStats() for name in sites}

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
        new = fn(tensor.view(*lm.chunk.mask.shape, tensor.shape[-1]))
        return None if new is None else new.reshape(tensor.shape)
    return wrapped


@contextmanager
def capture(lm: LoadedModel, sites: list[str], median_sites: set[str] = frozenset(),
            slices: dict[str, tuple[int, ...]] | None = None) -> Iterator[Recorder]:
    """Capture statistics at `sites` during the forward passes run inside the block.
    median_sites: where per-sequence medians are needed; slices: site -> features kept whole."""
    recorder = Recorder(sites)
    with hooks_removed_on_exit() as handles:
        for name in sites:
            module, which = resolve(lm, name)
            dims = tuple((slices or {}).get(name, ()))
            handles.append(_attach(lm, module, which, _stat_hook(lm, recorder, name, name in median_sites, dims)))
        yield recorder


def _stat_hook(lm: LoadedModel, recorder: Recorder, name: str, with_median: bool, slice_dims: tuple = ()):
    def on_tensor(tensor: torch.Tensor) -> None:
        stats, mask = recorder.stats[name], lm.chunk.mask.to(tensor.device if tensor is not None else "cpu")
        if name.endswith("attn.probs"):
            if tensor is None:
                raise RuntimeError("attention weights are None: load the model with eager attention")
            stats.add_probs(tensor, mask)
        else:
            stats.add_hidden(tensor, mask, with_median, slice_dims)
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
            if ablation.mode == "mean" and ablation.rows is None:  # #massive carries its own mean value
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
        if ablation.mode == "mean" and ablation.rows is None:
            return mean[: x.shape[1]].to(x.device, x.dtype).expand_as(x)  # [T, F] -> [B, T, F]
        if ablation.mode in ("value", "mean"):  # #massive's mean is a value: the massive cells' mean
            return torch.full_like(x, ablation.value)
        if bias is not None:
            return bias.to(x.dtype).expand_as(x)
        return torch.zeros_like(x)  # zero mode, or "bias" mode on a projection without bias

    def edit(x: torch.Tensor) -> torch.Tensor:  # x: [B, T, F]
        new = replacement(x)
        if ablation.target in ("attn", "mlp"):
            return new.clone()
        return torch.where(_selected(lm, ablation, x), new, x)

    return edit


def _selected(lm: LoadedModel, ablation, x: torch.Tensor) -> torch.Tensor:
    """[B, T, F] (broadcastable) bool: the entries of x an ablation of heads, dims or neurons edits."""
    B, T, F = x.shape
    units = torch.zeros(F, dtype=torch.bool, device=x.device)
    if ablation.target == "heads":  # F = H * head_dim, head h owns [h*hd, (h+1)*hd)
        for head in ablation.units:
            units[head * lm.head_dim:(head + 1) * lm.head_dim] = True
    else:  # dims or neurons
        units[list(ablation.units)] = True
    if ablation.rows is None and ablation.tokens is None:  # every position
        return units[None, None, :]
    positions = torch.zeros(B, T, dtype=torch.bool, device=x.device)
    if ablation.rows is not None:  # per dataset sequence: this chunk holds rows start..start+B
        start = lm.chunk.start
        for b, tokens in enumerate(ablation.rows[start:start + B]):
            positions[b, [t for t in tokens if t < T]] = True
    else:
        positions[:, [t for t in ablation.tokens if t < T]] = True
    return positions[:, :, None] & units[None, None, :]
