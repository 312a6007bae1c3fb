"""Agreement of two configurations at a site: 0 when their captures are identical."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

from massive_checks.base.lazy import LazyModule
from massive_checks.engine.needs import Needs
from massive_checks.measures.base import PerLayer, register

if TYPE_CHECKING:
    from massive_checks.engine import hooks, stats
else:  # imported at first use: the spec schema reads the measure classes without torch
    hooks = LazyModule("massive_checks.engine.hooks")
    stats = LazyModule("massive_checks.engine.stats")

Site = Literal[
    "out", "attn.out", "attn.resid", "attn.o_in", "mlp.in", "mlp.up", "mlp.gate", "mlp.act", "mlp.down_in", "mlp.out", "mlp.resid"
]


@register
class MaxRelDiff(PerLayer):
    """max |x - y| / max |y| between this configuration and `versus` at a site (per-cell maxima
    and position-wise means, whichever differs more)."""

    measure: Literal["max_rel_diff"] = "max_rel_diff"
    value_range: ClassVar = (0.0, math.inf)
    fixed: ClassVar[str] = "an extreme over every cell (0 exactly when two captures agree): an exact comparison, not an estimate"
    versus: str  # a configuration name (checked against the spec's at collection)
    site: Site = "out"

    def needs(self, lm, layers):
        return Needs(sites={hooks.site(L, self.site) for L in layers})

    def configs(self) -> set[str]:
        return {self.versus}

    def at(self, view, layer):
        name = hooks.site(layer, self.site)
        a, b = view.stats(name), view.sibling(self.versus).stats(name)
        return max(stats.max_rel_diff(a.cell_max, b.cell_max), stats.max_rel_diff(a.mean(), b.mean()))
