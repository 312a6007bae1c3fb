"""Outlier features (Dettmers et al. 2022, LLM.int8(), sec. 4): hidden dims of large magnitude that
recur across blocks and token positions. The criterion has three explicit parameters; where it
is read (`site`) decides everything, so the site is a parameter too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from massive_checks.base.lazy import LazyModule
from massive_checks.engine.needs import Needs
from massive_checks.language.intervals import SharedSet
from massive_checks.measures.base import Measure, register

if TYPE_CHECKING:
    import torch

    from massive_checks.engine import hooks
else:  # imported at first use: the spec schema reads the measure classes without torch
    torch = LazyModule("torch")
    hooks = LazyModule("massive_checks.engine.hooks")

Share = Annotated[float, Field(gt=0, le=1)]


@register
class OutlierDims(Measure):
    """Dims with |a| >= min_value in at least min_token_share of the real token positions (of
    all sequences together) in at least min_layer_share of the blocks of `layers`, read at
    `site`: attn.in (the normalized input of the attention projections, the default: the hidden
    states that feed the linear layers, as Dettmers measured), mlp.in, or out (the block output).
    Each dim's share is the share of sequences in which it meets the criterion on its own."""

    measure: Literal["outlier_dims"] = "outlier_dims"
    min_value: Annotated[float, Field(gt=0)]
    min_layer_share: Share
    min_token_share: Share
    site: Literal["attn.in", "mlp.in", "out"] = "attn.in"
    shape: ClassVar[str] = "set"
    layered: ClassVar[bool] = True
    dims_in_bound: ClassVar[bool] = True

    def needs(self, lm, layers):
        return Needs(exceed={(hooks.site(L, self.site), self.min_value) for L in layers})

    def compute(self, view, layers):
        counts = torch.stack([view.exceeding(hooks.site(L, self.site), self.min_value) for L in layers])  # [L, S, F]
        tokens = view.batch.attention_mask.sum(dim=1).double()  # [S] real tokens
        pooled = self._meets(counts.double().sum(dim=1) / tokens.sum())  # [F]: every sequence together
        alone = self._meets(counts.double() / tokens[None, :, None])  # [S, F]: each sequence on its own
        shares = alone.double().mean(dim=0)
        return SharedSet({int(d): float(shares[d]) for d in pooled.nonzero().flatten()}, view.units())

    def _meets(self, token_share: torch.Tensor) -> torch.Tensor:
        """token_share [L, ..., F] -> [..., F] bool: the dims meeting both shares."""
        layer_share = (token_share >= self.min_token_share).double().mean(dim=0)
        return layer_share >= self.min_layer_share
