"""The public extension API: what a user's own project imports to add measures, interventions and
trait judges to the spec language, from `conftest.py` or through entry points. Nothing else in
massive_checks is a stable interface. See examples/user_project/ and specs/README.md ("Your own
measures").

A measure is one registered class (MeasureDef's fields are its spec parameters):

    from typing import Literal
    from massive_checks import api

    @api.register
    class Top1Share(api.PerLayer):
        '''top-1 / (top-1 + top-2 + top-3) of the block output.'''
        measure: Literal["top1_share"] = "top1_share"

        def at(self, view, layer):
            tops = [api.top_value(view, layer, k) for k in (1, 2, 3)]
            return tops[0] / sum(tops)      # an Estimate: its interval comes along

An intervention target edits one site's tensor (`register_intervention`); a trait judge is a
function `texts -> [score in 0..1]`, named in a spec by entry point (group massive_checks.judges)
or as `package.module:function`.

Entry point groups: `massive_checks.measures` (a module imported before specs load: it may
register measures and interventions), `massive_checks.judges` (a judge function).
"""

from __future__ import annotations

from collections.abc import Callable

from massive_checks.engine import edits
from massive_checks.engine.hooks import HookContext, HookFn, site
from massive_checks.engine.needs import Needs
from massive_checks.engine.readings import head_scores_per_sequence, key_tokens, massive_dims, massive_tokens, peak_layer
from massive_checks.engine.session import ConfigView
from massive_checks.language.intervals import Estimate, SharedSet, value_of
from massive_checks.language.interventions import Ablation, register_target
from massive_checks.language.judges import TraitJudge, judge_texts, trait_judge
from massive_checks.measures.base import Measure, PerLayer, register
from massive_checks.measures.profile import median, top_value

__all__ = [
    "Ablation",
    "ConfigView",
    "Estimate",
    "HookContext",
    "HookFn",
    "Measure",
    "Needs",
    "PerLayer",
    "SharedSet",
    "TraitJudge",
    "head_scores_per_sequence",
    "judge_texts",
    "key_tokens",
    "massive_dims",
    "massive_tokens",
    "median",
    "peak_layer",
    "register",
    "register_intervention",
    "site",
    "top_value",
    "trait_judge",
    "value_of",
]


def register_intervention(name: str, site_suffix: str, make_edit: Callable) -> None:
    """Add intervention target `name`: `NAME:UNITS@LAYERS[#TOKENS][=value:X]` edits the units of
    site `site_suffix` ("out", "mlp.down_in", "attn.o_in", ...) after those blocks.
    make_edit(lm, ablation) -> a hook function (tensor [B, T, F], HookContext) -> the edited tensor
    (or None: unchanged); `ablation` carries layer, units, tokens, mode and value."""
    register_target(name, site_suffix)
    edits.USER_EDITS[name] = make_edit
