"""Spec validation: every malformed spec names file, line and key."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from conftest import SMALL_DATA
from massive_checks.base.errors import SpecError
from massive_checks.language import load_file
from massive_checks.pipeline.evaluate import Evaluator

VALID = """
id: ok
claim: a claim
models: any
checks:
  - {measure: top1, layers: 1-2, at_least: 10}
"""


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_spec_loads_into_frozen_dataclasses(tmp_path):
    (spec,) = load_file(write(tmp_path, VALID))
    assert spec.id == "ok" and spec.models is None and spec.checks[0].bound.value == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.id = "other"


TYPED = """
id: typed
claim: a claim
data: {samples: 3, seq_len: 20, whole: true}
golden: {rtol: 0.01, keys: {"*median*": {rtol: 0.5}}}
vectors:
  a: {pairs: sentiment, layer: 1, window: "last:4", method: mean_diff, clean: massive}
  b: {pairs: sentiment, layer: 1, window: all, method: probe, clean: {dims: [7, 2]}}
steering:
  s: {vector: a, sweep: {start: 2, steps: 1}, prompts: 2, trait: {pos: [" yes"], neg: [" no"]}}
checks:
  - {measure: cosine, a: a, b: b, at_least: -0.5}
  - {measure: best_coef, steering: s, steps: [{change: [baseline, baseline2]}], at_least: -1.0e-3}
interventions:
  baseline2: "mlp:0"
"""


def test_what_a_spec_writes_is_parsed_once_into_the_runtime_objects(tmp_path):
    """The schema's models are the objects the engine reads: no hand-converted twin in between,
    YAML lists held as (hashable) tuples, `clean: massive` and `golden.keys` in their runtime form."""
    from massive_checks.language.data import DataConfig
    from massive_checks.language.definitions import SteeringDef, Sweep, Trait
    from massive_checks.language.tolerance import GoldenConfig, Tolerance
    from massive_checks.language.vector_defs import Cleaning, VectorDef

    (spec,) = load_file(write(tmp_path, TYPED))
    assert spec.data == DataConfig(samples=3, seq_len=20, whole=True)
    assert spec.golden == GoldenConfig(rtol=0.01, keys={"*median*": Tolerance(rtol=0.5)})
    assert spec.golden.tolerance("top1 median") == Tolerance(rtol=0.5) and spec.golden.tolerance("x").rtol == 0.01
    a, b = spec.vectors["a"], spec.vectors["b"]
    assert isinstance(a, VectorDef) and a.clean == Cleaning.massive() and a.clean.kind == "massive"
    assert b.clean == Cleaning(dims=(2, 7)) and b.clean.kind == "dims"  # sorted: [7, 2] and [2, 7] are one set
    steering = spec.steering["s"]
    assert isinstance(steering, SteeringDef) and steering.sweep == Sweep(start=2.0, steps=1)
    assert steering.trait == Trait(pos=(" yes",), neg=(" no",)) and steering.coefs == ()
    assert spec.checks[1].quantity.steps[0].value == ("baseline", "baseline2")
    assert len({a, b, steering, spec.data, spec.golden}) == 5  # frozen and hashable: they key memos
    with pytest.raises(ValueError, match="frozen"):
        spec.data.samples = 4


@pytest.mark.parametrize(
    "clean, message",
    [("{}", "give one of dims"), ("{dims: [1], top: 2}", "give one of dims"), ("{dims: []}", "List should have at least 1")],
)
def test_a_cleaning_names_one_way(tmp_path, clean, message):
    text = TYPED.replace("clean: {dims: [7, 2]}", f"clean: {clean}")
    with pytest.raises(SpecError, match=message) as info:
        load_file(write(tmp_path, text))
    assert info.value.key.startswith("vectors.b.clean") and info.value.line == 8


@pytest.mark.parametrize(
    "text, line, key, message",
    [
        ("id: x\nclaim: c\nchecks:\n  - {measure: top1, at_least: 1}\nmodel: [gpt2]\n", 5, "model", "unknown key; allowed"),
        ("id: x\nclaim: c\nclaim: d\nchecks: []\n", 3, "claim", "duplicate key"),
        ("id: x\nclaim: c\nchecks:\n  - measure: top5\n    at_least: 1\n", 4, "checks[0].measure", "unknown measure 'top5'"),
        ("id: x\nclaim: c\nchecks:\n  - measure: top1\n    between: [5, 1]\n", 5, "checks[0].between", "low <= high"),
        (
            "id: x\nclaim: c\nchecks:\n  - measure: top1\n    at_least: 1\n    at_most: 2\n    equals: 3\n",
            6,
            "checks[0].at_most",
            "exactly one bound",
        ),
        (
            "id: x\nclaim: c\nchecks:\n  - {measure: top1, config: nope, at_least: 1}\n",
            4,
            "checks[0].config",
            "unknown configuration 'nope'",
        ),
        (
            'id: x\nclaim: c\ninterventions:\n  off: ["atn:all"]\nchecks:\n  - {measure: top1, at_least: 1}\n',
            4,
            "interventions.off",
            "target 'atn'",
        ),
        (
            "id: x\nclaim: c\ndata:\n  samples: -3\nchecks:\n  - {measure: top1, at_least: 1}\n",
            4,
            "data.samples",
            "greater than or equal to 1",
        ),
        ("id: x\nchecks:\n  - {measure: top1, at_least: 1}\n", 1, "claim", "required key is missing"),
        ("id: x\nclaim: c\nchecks:\n  - {measure: dim_peak, at_least: 1}\n", 4, "checks[0].dim", "dim_peak needs dim"),
        ("id: x\nclaim: [unclosed\n", 3, "", "invalid YAML"),
        (  # found by fuzzing: a configuration against itself is 0 whatever the model does
            'id: x\nclaim: c\ninterventions:\n  a: ["mlp:all"]\n  b: ["mlp:all"]\nchecks:\n'
            "  - {measure: max_rel_diff, config: a, versus: b, at_most: 0.1}\n",
            7,
            "checks[0].versus",
            "against itself is 0, so the check cannot fail",
        ),
        (
            "id: x\nclaim: c\nchecks:\n  - {measure: massive_dims, contains: []}\n",
            4,
            "checks[0].contains",
            "true of every set",
        ),
        (
            "id: x\nclaim: c\nchecks:\n  - {measure: massive_dims, excludes: []}\n",
            4,
            "checks[0].excludes",
            "true of every set",
        ),
    ],
)
def test_malformed_specs_name_file_line_and_key(tmp_path, text, line, key, message):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_file(path)
    error = info.value
    assert (error.path, error.line, error.key) == (str(path), line, key)
    assert message in str(error) and f"{path}:{line}" in str(error)


def test_duplicate_ids_in_one_file_are_rejected(tmp_path):
    with pytest.raises(SpecError, match="duplicate spec id 'ok'"):
        load_file(write(tmp_path, VALID + "---\n" + VALID))


def test_yaml_is_loaded_safely(tmp_path):
    with pytest.raises(SpecError, match="invalid YAML"):
        load_file(write(tmp_path, "id: !!python/object/apply:os.system ['true']\nclaim: c\nchecks: []\n"))


def test_c3_bad_dims_of_another_model_are_rejected_naming_the_width(tmp_path, session_for):
    """Seed 002 put LLaMA2-7B's dims 2533 and 1415 on GPT-2 (768 dims): the suite must refuse."""
    (spec,) = load_file(
        write(
            tmp_path,
            """
        id: c3-bad
        claim: layer-2 peaks are in dims 2533 and 1415
        checks:
          - {measure: massive_dims, layers: 2, contains: [2533, 1415]}
    """,
        )
    )
    session = session_for("tiny-gpt2")
    with pytest.raises(SpecError) as info:
        Evaluator(spec, session, SMALL_DATA).evaluate()
    assert "dims [1415, 2533] that tiny-gpt2 does not have" in str(info.value)
    assert "its residual stream has 64 dims (0-63)" in str(info.value)
    assert session.forward_passes == 0  # rejected before any compute


@pytest.mark.parametrize(
    "check, interventions, message",
    [
        ("{measure: top1_dim, layers: 2, equals: 2533}", "", "names dims [2533]"),
        ("{measure: top1, config: off, at_least: 1}", "interventions:\n  off: ['dims:1415@2']\n", "names dims [1415]"),
        ("{measure: head_score, head: '5.12', at_least: 1.0e-6}", "", "head 5.12: tiny-gpt2 has 3 layers x 4 heads"),
        ("{measure: head_rank, head: '40.1', at_most: 3}", "", "head 40.1: tiny-gpt2 has 3 layers x 4 heads"),
    ],
)
def test_units_the_model_lacks_are_rejected_before_running(tmp_path, session_for, check, interventions, message):
    (spec,) = load_file(write(tmp_path, f"id: x\nclaim: c\n{interventions}checks:\n  - {check}\n"))
    session = session_for("tiny-gpt2")
    with pytest.raises(SpecError, match=message.replace("[", "\\[").replace("]", "\\]")):
        Evaluator(spec, session, SMALL_DATA).evaluate()
    assert session.forward_passes == 0


def test_the_readme_example_spec_is_valid(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"```yaml\n(id: smollm2-massive-dims.*?)```", readme, re.S).group(1)
    (spec,) = load_file(write(tmp_path, block))
    assert spec.id == "smollm2-massive-dims" and len(spec.checks) == 4


def test_bounds_read_as_math_not_python(tmp_path):
    (spec,) = load_file(
        write(
            tmp_path,
            "id: x\nclaim: c\nchecks:\n  - {measure: massive_dims, equals: [507, 3]}\n"
            "  - {measure: massive_tokens, subset_of: [1, 0]}\n",
        )
    )
    assert [c.bound.text() for c in spec.checks] == ["== {3, 507}", "⊆ {0, 1}"]


def test_every_committed_spec_loads_without_torch():
    """The spec language (spec/, the measure classes, contrast files, windows and steering
    definitions) reads every committed spec without importing torch or transformers: the engine
    is imported when a pass runs (issue 27). In a fresh interpreter, as a user's script would."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parent.parent
    specs = [str(p) for p in sorted(root.glob("specs/**/*.yaml")) if p.name != "_defaults.yaml"]
    script = (
        "import sys\nfrom massive_checks.language import load_file, json_schema\n"
        "n = sum(len(load_file(path)) for path in sys.argv[1:])\njson_schema()\n"
        "print(n, sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script, *specs], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= len(specs) and out[1:] == ["[]"]


def test_a_layer_range_is_parsed_once_and_resolved_against_the_model(tmp_path):
    """A check's `layers` becomes a LayerSet at loading (syntax, order, at most MAX_LAYERS); the
    model's depth resolves it later, and its text as written keys the check."""
    from massive_checks.language.interventions import LayerSet

    (spec,) = load_file(write(tmp_path, VALID.replace("layers: 1-2", "layers: '4-5,1'")))
    quantity = spec.checks[0].quantity
    assert quantity.layers == LayerSet("4-5,1", ((4, 5), (1, 1))) and "layers 4-5,1" in spec.checks[0].key()
    assert quantity.blocks(6) == [1, 4, 5]
    with pytest.raises(ValueError, match="block 5 is out of range for a model with 5 blocks"):
        quantity.blocks(5)
    (every,) = load_file(write(tmp_path, VALID.replace("layers: 1-2", "layers: all")))
    assert every.checks[0].quantity.layers is None and every.checks[0].quantity.blocks(3) == [0, 1, 2]
