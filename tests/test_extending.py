"""Following docs/design.md, "How to add a measure, an intervention, an architecture": a measure is
one registered class; an edit is a hook function next to captures; the committed JSON Schema is
the one the registry generates (the layers are tests/test_layers.py's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
import torch

from conftest import SMALL_DATA
from massive_checks.engine import hooks
from massive_checks.engine.apply import capture_stats
from massive_checks.engine.capture import stat_pairs
from massive_checks.engine.needs import Needs
from massive_checks.language import json_schema, load_file
from massive_checks.measures import REGISTRY, PerLayer, register
from massive_checks.measures.profile import top_value
from massive_checks.pipeline.evaluate import Evaluator

PACKAGE = Path(__file__).parent.parent / "massive_checks"


@pytest.fixture
def top1_share():
    """docs/design.md's example measure: top-1 over the sum of the top-3 (paper statistic), one class."""

    class Top1Share(PerLayer):
        """top-1 / (top-1 + top-2 + top-3) of the block output."""

        measure: Literal["top1_share"] = "top1_share"

        def at(self, view, layer):
            tops = [top_value(view, layer, k) for k in (1, 2, 3)]
            return tops[0] / sum(tops)

    register(Top1Share)
    yield Top1Share
    del REGISTRY["top1_share"]


def test_a_measure_is_one_registered_class(tmp_path, top1_share, session_for):
    path = tmp_path / "specs" / "share.yaml"
    path.parent.mkdir()
    path.write_text(
        "id: share\nclaim: The planted dim dominates block 1.\nchecks:\n"
        "  - {measure: top1_share, layers: 1-3, at_least: 0.9}\n"
        "  - {measure: top1_share, layers: 0, at_most: 0.9}\n"
    )
    (spec,) = load_file(path)
    session = session_for("planted-llama")
    result = Evaluator(spec, session, SMALL_DATA).evaluate()
    assert result.passed, result.checks
    cells = session.view(SMALL_DATA).block(2).cells()[0]  # [S, K] largest |a| per sequence
    by_hand = float(cells[:, 0].mean() / cells[:, :3].mean(dim=0).sum())
    share = result.observation.checks[0].values["layer 2"]
    assert share.value == pytest.approx(by_hand, rel=1e-6)
    assert share.interval(0.95) is not None  # arithmetic on estimates keeps their replicates (paired)
    assert "top1_share" in json.dumps(json_schema())
    path.write_text("id: share\nclaim: c\nchecks:\n  - {measure: top1_share, layers: 1, dim: 3, at_least: 0.9}\n")
    with pytest.raises(Exception, match="unknown key for top1_share"):
        load_file(path)


def add_vector(name: str, coefficient: float):
    """A user's edit: x + coefficient x vectors[name] at every real token (x: [B, T, D], vector [D])."""

    def edit(x: torch.Tensor, context) -> torch.Tensor:
        vector = context.vectors[name].to(x.device, x.dtype)
        return x + coefficient * vector * context.mask.to(x.device, x.dtype)[..., None]

    return edit


def test_an_edit_is_a_hook_function_that_can_use_a_named_vector(load_model):
    """A user's edit reads a named vector from the hook context; captures after it see the edit."""
    lm = load_model("tiny-llama")
    ids = torch.tensor([[1, 5, 9, 12], [1, 7, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    site = hooks.site(0, "out")
    vector = torch.zeros(lm.width)
    vector[3] = 1.0
    pairs, plain = stat_pairs(Needs({site}))
    with torch.no_grad(), hooks.attach(lm, pairs) as attached:
        attached.forward(lm.model, ids, mask)
    pairs, steered = stat_pairs(Needs({site}))
    with torch.no_grad(), hooks.attach(lm, [(site, add_vector("v", 1000.0))] + pairs, vectors={"v": vector}) as attached:
        attached.forward(lm.model, ids, mask)
    assert hooks.hook_count(lm.model) == 0
    before, after = plain[site].finish().dim_max(), steered[site].finish().dim_max()  # [S, D]
    assert torch.all(after[:, 3] > 900) and torch.allclose(after[:, 4:], before[:, 4:])


def test_captures_see_padding_only_through_the_context(load_model):
    lm = load_model("tiny-llama")
    ids, site = torch.tensor([[1, 5, 9, 12], [1, 7, 3, 0]]), hooks.site(1, "out")
    with torch.no_grad(), capture_stats(lm, [site]) as unmasked:
        lm.model(input_ids=ids)  # a direct call: every token counts
    with torch.no_grad(), capture_stats(lm, [site]) as masked:
        masked.forward(lm.model, ids, torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    assert float(masked[site].token_max()[1, 3]) == 0.0 < float(unmasked[site].token_max()[1, 3])


def test_the_committed_schemas_are_the_generated_ones():
    root = Path(__file__).parent.parent / "specs"
    assert json.loads((root / "spec.schema.json").read_text()) == json_schema(), (
        "run: massive-checks schema > specs/spec.schema.json"
    )
    assert json.loads((root / "defaults.schema.json").read_text()) == json_schema(defaults=True)


def test_every_committed_spec_validates_against_the_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from massive_checks.base.yaml_lines import read_documents

    root = Path(__file__).parent.parent / "specs"
    validator = jsonschema.Draft202012Validator(json.loads((root / "spec.schema.json").read_text()))
    defaults = jsonschema.Draft202012Validator(json.loads((root / "defaults.schema.json").read_text()))
    count = 0
    for path in sorted(root.glob("*/*.yaml")):
        for doc in read_documents(path):
            if doc is not None:
                (defaults if path.name == "_defaults.yaml" else validator).validate(json.loads(json.dumps(doc)))
                count += 1
    assert count >= 48
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"claim": "c", "checks": [{"measure": "top1", "aggregate": "max", "at_least": 1}]})
