"""Following docs/design.md, "How to add a measure, an intervention, an architecture": a measure is
one registered class; an edit is a hook function next to captures; the modules import each other
without a cycle; the committed JSON Schema is the one the registry generates."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Literal

import pytest
import torch

from massive_checks.engine import hooks, stats
from massive_checks.engine.apply import capture_stats
from massive_checks.engine.capture import stat_pairs, Needs
from massive_checks.evaluate import Evaluator
from massive_checks.measures import REGISTRY, PerLayer, register
from massive_checks.measures.profile import top_value
from massive_checks.spec import json_schema, load_file

from conftest import SMALL_DATA

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


def _module_names() -> set[str]:
    return {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__") for p in PACKAGE.rglob("*.py")
    }


def _imported_from(path: Path, node: ast.ImportFrom) -> set[str]:
    """The modules a relative `from X import a, b` reads: X.a where a is a submodule (not X's
    package init, which holds no imports of its own at load), else X."""
    parts = path.relative_to(PACKAGE.parent).parts
    source = ".".join(parts[: len(parts) - node.level] + ((node.module,) if node.module else ()))
    modules = _module_names()
    return {f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names}


def _imports(path: Path) -> set[str]:
    """massive_checks modules a module imports, at any level (also inside functions, and at first
    use through lazy.LazyModule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LazyModule" and node.args:
            name = getattr(node.args[0], "value", "")
            found.update([name] if isinstance(name, str) and name.startswith("massive_checks") else [])
        if isinstance(node, ast.ImportFrom) and node.level:
            found.update(_imported_from(path, node))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("massive_checks"))
    return found


# The layers docs/design.md draws, lowest first: loading a module loads only modules of its own
# layer or below. (A measure reaches the engine at first use, through lazy.LazyModule: the spec
# language loads without torch.) The subpackages group modules by topic; spec/, engine/,
# steering/ and output/ hold modules of several layers, so their modules are placed one by one
# (their package inits import nothing at load), measures/ and plugin/ as a whole.
LAYERS = (
    ("base", ("constants", "errors", "files", "lazy", "yaml_lines", "options", "engine", "steering", "output")),
    (
        "language",
        (
            "spec",
            "spec.definitions",
            "spec.interventions",
            "spec.intervals",
            "spec.schema",
            "spec.objects",
            "spec.rules",
            "spec.messages",
            "spec.loading",
            "steering.judges",
            "steering.contrast",
            "steering.vectors",
            "output.records",
            "output.panels",
            "output.golden",
            "engine.data",
            "measures",
        ),
    ),
    (
        "engine",
        (
            "engine.models",
            "engine.hooks",
            "engine.capture",
            "engine.edits",
            "engine.stats",
            "engine.synthetic",
            "engine.cores",
            "engine.session",
            "engine.apply",
            "steering.steer",
        ),
    ),
    ("pipeline", ("evaluate", "output.figures", "output.report", "suite", "scan")),
    ("entry points", ("cli", "plugin")),
)
SPLIT = ("spec", "engine", "steering", "output")  # subpackages whose modules are placed one by one


def _unit(module: str) -> str:
    """massive_checks.engine.models -> engine.models; massive_checks.measures.base -> measures."""
    parts = module.split(".")[1:]
    return ".".join(parts[:2]) if parts[0] in SPLIT else parts[0]


def _loaded_on_import(path: Path) -> set[str]:
    """massive_checks modules a module imports when it is loaded: its top-level imports, not those
    inside functions or under TYPE_CHECKING."""
    found: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If):
                visit(node.orelse if "TYPE_CHECKING" in ast.unparse(node.test) else node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + [n for h in node.handlers for n in h.body] + node.orelse + node.finalbody)
            elif isinstance(node, ast.ImportFrom) and node.level:
                found.update(_imported_from(path, node))
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("massive_checks"))

    visit(ast.parse(path.read_text()).body)
    return found


def test_loading_a_layer_loads_only_layers_below_it():
    layer = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}
    files = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")
    unit = lambda p: _unit(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"))
    assert {unit(p) for p in files} == set(layer), "every module (or subpackage) has one layer"
    upward = [
        f"{p.relative_to(PACKAGE)} ({LAYERS[layer[unit(p)]][0]}) loads {dep} ({LAYERS[layer[_unit(dep)]][0]})"
        for p in files
        for dep in sorted(_loaded_on_import(p) - {"massive_checks"})
        if layer[_unit(dep)] > layer[unit(p)]
    ]
    assert not upward, upward


def test_no_module_imports_one_that_imports_it_back():
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p for p in PACKAGE.rglob("*.py")
    }
    graph = {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}
    graph = {name: {m for m in deps if m != name and not (name.startswith(m + ".") or name == m)} for name, deps in graph.items()}

    def reaches(start, target, seen=()):
        return any(d == target or (d not in seen and reaches(d, target, (*seen, d))) for d in graph.get(start, ()))

    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert not cycles, f"import cycles: {cycles}"
    outside = {m for m in graph if not m.startswith("massive_checks.plugin")}
    assert not {m for m in outside if any(d.startswith("massive_checks.plugin") for d in graph[m])}, "nothing imports the plugin"
    assert sorted(m for m, path in modules.items() if "import pytest" in path.read_text()) == [
        "massive_checks.plugin",
        "massive_checks.plugin.runner",
    ]


def test_the_committed_schemas_are_the_generated_ones():
    root = Path(__file__).parent.parent / "specs"
    assert json.loads((root / "spec.schema.json").read_text()) == json_schema(), (
        "run: massive-checks schema > specs/spec.schema.json"
    )
    assert json.loads((root / "defaults.schema.json").read_text()) == json_schema(defaults=True)


def test_every_committed_spec_validates_against_the_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from massive_checks.yaml_lines import read_documents

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


def test_package_modules_import_stats_not_the_reverse():
    assert "massive_checks.measures" not in _imports(PACKAGE / "engine" / "stats.py")
    assert stats.is_massive(200.0, 0.1, 100.0, 1000.0)
