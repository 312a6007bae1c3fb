"""The one place that touches modules: canonical site names and the one hook primitive, `attach`.

Every hook lives inside `attach`'s context, which removes it on exit, also when the body raises.
A hook function receives the tensor and a `HookContext` (the chunk's mask, its first sequence's
index in the dataset, the decode step and positions, named vectors); it returns None to leave the
tensor as it is, or a tensor to replace it. Captures (capture.py) and edits (edits.py) are both
such functions.

Sites (L = 0-based block index):
  blocks.L.out           residual stream after block L            [B, T, D]
  blocks.L.attn.out      attention output (the attention module's)  [B, T, D]
  blocks.L.attn.resid    what attention adds to the residual stream [B, T, D]: attn.out, or for
                         Gemma 2/3 its post_attention_layernorm (RMSNorm(attn.out) x weight)
  blocks.L.attn.o_in     input of the attention output projection  [B, T, H*hd] (heads side by side)
  blocks.L.attn.probs    attention weights (eager attention)       [B, H, T, T]
  blocks.L.attn.in       attention input (after the pre-attention norm: what q, k, v read) [B, T, D]
  blocks.L.attn.v        value vectors, heads side by side         [B, T, Hkv*hd] (split from a
                         fused q/k/v output; read-only there)
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
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from massive_checks.engine.models import LoadedModel

T = TypeVar("T")

SITE_PATTERN = re.compile(
    r"^blocks\.(\d+)\.(out|attn\.out|attn\.resid|attn\.o_in|attn\.probs|attn\.in|attn\.v|mlp\.in|mlp\.up|mlp\.gate|mlp\.act|mlp\.down_in"
    r"|mlp\.out|mlp\.resid)$"
)
# site suffix -> (adapter field, which tensor of the hook call: "out", "out0", "out1" or "in")
_WHERE = {
    "out": ("blocks", "out0"),
    "attn.out": ("attn", "out0"),
    "attn.probs": ("attn", "out1"),
    "attn.o_in": ("o_proj", "in"),
    "attn.in": ("q", "in"),
    "attn.v": ("v", "out"),
    "mlp.in": ("up", "in"),
    "mlp.up": ("up", "out"),
    "mlp.gate": ("gate", "out"),
    "mlp.act": ("act", "out"),
    "mlp.down_in": ("down", "in"),
    "mlp.out": ("down", "out"),
    "attn.resid": ("attn_resid", "out0"),
    "mlp.resid": ("mlp_resid", "out"),
}
_RESID_FALLBACK = {"attn_resid": ("attn", "out0"), "mlp_resid": ("down", "out")}  # no post-norm: the output itself


def value_part(lm: LoadedModel, site_name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For attn.v on a fused q/k/v projection: the function taking its output [B, T, 3*H*hd] to
    the value vectors [B, T, H*hd] (the architecture's own split); None where nothing is split."""
    if not site_name.endswith(".attn.v") or lm.adapter.qkv == "separate":
        return None
    if lm.adapter.qkv == "stacked":  # GPT-2: q, k, v = c_attn(x).split(D)
        return lambda y: y.chunk(3, dim=-1)[2]
    hd = lm.head_dim  # GPT-NeoX: per head [q_h | k_h | v_h]
    return lambda y: y.unflatten(-1, (-1, 3 * hd))[..., 2 * hd :].flatten(-2)


def site(layer: int, name: str) -> str:
    return f"blocks.{layer}.{name}"


def layer_of(site_name: str) -> int:
    return int(site_name.split(".")[1])


def resolve(lm: LoadedModel, site_name: str) -> tuple[torch.nn.Module, str]:
    """Site name -> (module, which tensor). Raises ValueError naming valid sites."""
    match = SITE_PATTERN.match(site_name)
    if not match:
        raise ValueError(f"unknown site {site_name!r}; valid: blocks.<L>.({'|'.join(_WHERE)})")
    layer, suffix = int(match.group(1)), match.group(2)
    lm.check_layer(layer, f"site {site_name!r}")
    field_name, which = _WHERE[suffix]
    if field_name in _RESID_FALLBACK and getattr(lm.adapter, field_name) is None:
        field_name, which = _RESID_FALLBACK[field_name]
    path = getattr(lm.adapter, field_name)
    if path is None:
        raise ValueError(f"site {site_name!r}: {lm.adapter.family} has no gated MLP")
    path = f"{path}.{layer}" if field_name == "blocks" else path.format(L=layer)
    return lm.module(path), which


@dataclass(frozen=True)
class HookContext:
    """What a hook function knows about the forward call running now.

    mask      [B, T] 1 = real token (padding excluded from every statistic)
    start     dataset index of the chunk's first sequence (per-sequence edits)
    step      decode step during generation (None: a whole-sequence forward)
    positions [B, T] absolute position of each token (during generation, T = 1)
    vectors   named vectors an edit may add (steering)
    prompt_length [B] real prompt tokens: positions >= it are generated (or scored continuation)"""

    mask: torch.Tensor
    start: int = 0
    step: int | None = None
    positions: torch.Tensor | None = None
    vectors: Mapping[str, torch.Tensor] = field(default_factory=dict)
    prompt_length: torch.Tensor | None = None  # [B] real prompt tokens (steering: prompt vs generated)
    _shared: dict = field(default_factory=dict, repr=False, compare=False)  # per forward call, see shared()
    _at_end: list | None = field(default=None, repr=False, compare=False)  # see at_end()

    def shared(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A value derived from this call's mask (e.g. the padding mask on a device), computed by
        the first hook that asks and reused by the others: one kernel per call, not per site."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    @property
    def deferrable(self) -> bool:
        """Whether at_end may be used: the call runs through Attachment.forward."""
        return self._at_end is not None

    def at_end(self, finish: Callable[[], None]) -> None:
        """Run finish() once this forward call has returned (statistics held for a batched
        computation). Only where `deferrable`."""
        assert self._at_end is not None, "at_end outside Attachment.forward"
        self._at_end.append(finish)

    def absolute_positions(self) -> torch.Tensor:
        """[B, T] each token's position among its sequence's real tokens (given, or from the mask)."""
        return self.positions if self.positions is not None else token_positions(self.mask)


def token_positions(mask: torch.Tensor) -> torch.Tensor:
    """[B, T] mask -> [B, T] each token's position among its row's real tokens (padding: 0)."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


HookFn = Callable[[torch.Tensor, HookContext], "torch.Tensor | None"]


class StopForward(Exception):
    """Raised after the last block a capture reads; Attachment.forward catches it."""


def last_layer(site_names) -> int:
    """The deepest block any of these sites is in (a forward may stop after it)."""
    return max(layer_of(name) for name in site_names)


class Attachment:
    """Hooks attached by `attach`. `forward` runs a network with a context the hooks receive;
    a forward run directly (e.g. inside `ablate`) gets an all-real-tokens context."""

    def __init__(self, vectors: Mapping[str, torch.Tensor]):
        self.vectors = vectors
        self._context: HookContext | None = None

    def forward(
        self,
        network: torch.nn.Module,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        start: int = 0,
        *,
        step: int | None = None,
        positions: torch.Tensor | None = None,
        prompt_length: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        """mask: the attention mask ([B, past + T] when decoding with a cache); token_mask [B, T]:
        which of this call's tokens are real (default: the mask itself)."""
        self._context = HookContext(
            mask if token_mask is None else token_mask, start, step, positions, self.vectors, prompt_length, _at_end=[]
        )
        try:
            try:
                output = network(input_ids=input_ids, attention_mask=mask, **kwargs)
            except StopForward:
                output = None  # stopped after the last block a capture reads: no later blocks, no logits
            for finish in self._context._at_end or ():
                finish()
            return output
        finally:
            self._context = None

    def context_for(self, tensor: torch.Tensor) -> HookContext:
        if self._context is not None:
            return self._context
        return HookContext(torch.ones(tensor.shape[:2], dtype=torch.long, device=tensor.device), vectors=self.vectors)


@contextmanager
def attach(
    lm: LoadedModel,
    pairs: list[tuple[str, HookFn]],
    vectors: Mapping[str, torch.Tensor] | None = None,
    stop_after: int | None = None,
) -> Iterator[Attachment]:
    """Attach (site, function) pairs, in order (edits before captures, so captures see edited
    tensors); all are removed when the block exits, also on errors. stop_after: a block index;
    forwards run through Attachment.forward end after that block (direct calls run to the end)."""
    attachment, handles = Attachment(vectors or {}), []
    try:
        for name, fn in pairs:
            module, which = resolve(lm, name)
            part = value_part(lm, name)
            handles.append(
                _register(module, which, _with_context(attachment, fn if part is None else _read_only(fn, part, name)))
            )
        if stop_after is not None:  # registered last: the block's own captures run before it
            lm.check_layer(stop_after, "stop_after")
            handles.append(_register_stop(lm.module(f"{lm.adapter.blocks}.{stop_after}"), attachment))
        yield attachment
    finally:
        for handle in handles:
            handle.remove()


def _with_context(attachment: Attachment, fn: HookFn) -> Callable[[torch.Tensor], torch.Tensor | None]:
    def call(tensor: torch.Tensor | None):
        if tensor is None:  # attention weights of a non-eager implementation: the function says so
            return fn(tensor, attachment._context)  # type: ignore[arg-type]  # HookFns of attention weights take None
        context = attachment.context_for(tensor)
        if tensor.dim() == 2 and context.mask.dim() == 2 and tensor.shape[0] == context.mask.numel():
            # Some MLPs (OPT) run on flattened tokens [B*T, F]: present them as [B, T, F].
            new = fn(tensor.view(*context.mask.shape, tensor.shape[-1]), context)
            return None if new is None else new.reshape(tensor.shape)
        return fn(tensor, context)

    return call


def _read_only(fn: HookFn, part: Callable[[torch.Tensor], torch.Tensor], site_name: str) -> HookFn:
    """A capture of a part split from a module's tensor: it may read it, never replace it."""

    def call(tensor: torch.Tensor, context: HookContext) -> None:
        if fn(part(tensor), context) is not None:
            raise ValueError(f"site {site_name!r} is split from a fused projection: it can be captured, not edited")

    return call


def _marked(hook: Callable) -> Callable:
    """Mark a hook as ours, so tests can find any left on a model."""
    setattr(hook, "massive_checks", True)  # noqa: B010  (a function attribute mypy does not know)
    return hook


def _register(module: torch.nn.Module, which: str, fn):
    """Run fn on the chosen tensor of the module's call; a tensor it returns replaces that one."""
    if which == "in":

        def pre_hook(_module, args):
            new = fn(args[0])
            return None if new is None else (new, *args[1:])

        return module.register_forward_pre_hook(_marked(pre_hook))

    def hook(_module, _args, output):
        is_tuple = isinstance(output, tuple)
        index = 1 if which == "out1" else 0
        new = fn(output[index] if is_tuple else output)
        if new is None:
            return None
        return (*output[:index], new, *output[index + 1 :]) if is_tuple else new

    return module.register_forward_hook(_marked(hook))


def _register_stop(block: torch.nn.Module, attachment: Attachment):
    def stop(_module, _args, _output):
        if attachment._context is not None:  # inside Attachment.forward, which catches it
            raise StopForward

    return block.register_forward_hook(_marked(stop))


def hook_count(module: torch.nn.Module) -> int:
    """massive_checks hooks still registered in the module tree (0 after every context exits).
    Hooks that transformers installs itself are not counted."""
    return sum(
        getattr(fn, "massive_checks", False)
        for m in module.modules()
        for fn in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
    )
