"""Property tests (hypothesis): no input makes the suite raise anything but its own errors.

- collection: generated spec documents and mutated committed spec files either load or raise
  SpecError (file, line, key); never a TypeError, KeyError, UnicodeDecodeError, RecursionError...
- evaluation: specs that load, evaluated on a tiny model, pass, fail or raise a MassiveChecksError;
  a check never passes with zero rows.
- hooks: random sequences of captures and interventions, with exceptions inside, leave no hook and
  bit-identical logits.
The example counts are fixed (derandomized) so CI runs the same cases each time: 2,000 at
collection, 450 generated for evaluation (of which 200+ load and are evaluated), 50 hook sequences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from massive_checks.base.errors import MassiveChecksError, SpecError
from massive_checks.engine import hooks
from massive_checks.engine.apply import capture_stats
from massive_checks.engine.session import ModelSession
from massive_checks.language import interventions, load_file
from massive_checks.language.data import DataConfig
from massive_checks.language.schema import for_registry
from massive_checks.measures import REGISTRY
from massive_checks.measures.mlp import MLP_FLOW
from massive_checks.pipeline.evaluate import Evaluator

ROOT = Path(__file__).parent.parent
COMMITTED = [p.read_bytes() for p in sorted(ROOT.glob("specs/**/*.yaml"))]


def fuzz(examples: int):
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


COUNTS = {"collection": 0, "generated for evaluation": 0, "evaluated": 0, "verdicts": 0, "project errors": 0, "hooks": 0}

# -- values a user (or an attacker) might write
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "all",
            "2-0",
            "0-1",
            "1",
            "5.10",
            "top3",
            "bottom0",
            "baseline",
            "x",
            "massive",
            "first",
            "paper",
            "down_in",
            "out",
            "attn.resid",
        ]
    ),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12
)
INTERVENTION_TEXTS = [
    "attn:all",
    "mlp:0",
    "mlp:1-2",
    "heads:0.1",
    "heads:all",
    "heads:top2",
    "heads:bottom0",
    "dims:3@1#0",
    "dims:3@1#massive=mean",
    "dims:3@all=value:1e9",
    "neurons:99999@0",
    "neurons:1@0",
    "massive:all@all",
    "massive:all@1=mean",
    "attn:5-1",
    "dims:1@0=value:nan",
    "attn:all=bias",
    "heads:9.9",
    "mlp:0=mean",
    "dims:2@0#0,1=mean",
    "dims:-1@0=value:1000",
    "attn:0@2",
    "mlp:0#0",
    "dims:5@0=value:1e308",
    "dims:1.5@0",
    "heads:1.-1",
]
INVALID = (
    "heads:bottom0",
    "attn:5-1",
    "dims:1@0=value:nan",
    "dims:-1@0=value:1000",
    "attn:0@2",
    "mlp:0#0",
    "dims:5@0=value:1e308",
    "dims:1.5@0",
    "heads:1.-1",
)
VALID_INTERVENTIONS = [t for t in INTERVENTION_TEXTS if t not in INVALID]
KEYS = [
    "measure",
    "config",
    "layers",
    "change",
    "difference",
    "over_layers",
    "steps",
    "statistic",
    "dim",
    "head",
    "to",
    "checkpoint",
    "layer",
    "k",
    "versus",
    "site",
    "between",
    "at_least",
    "at_most",
    "approx",
    "rel",
    "equals",
    "subset_of",
    "contains",
    "excludes",
    "id",
    "vector",
    "a",
    "b",
    "pairs",
    "window",
    "without",
    "dims",
    "split",
    "steering",
    "coef",
]
GOOD_VALUES = {
    "config": st.sampled_from(["baseline", "a", "b"]),
    "layers": st.sampled_from(["all", "0", "1-2", "0,2", 2, "9"]),  # 9: past tiny-llama's 3 blocks
    "change": st.sampled_from([["baseline", "a"], ["a", "b"], ["b", "baseline"]]),
    "over_layers": st.sampled_from(["mean", "max", "min", "max_abs"]),
    "statistic": st.sampled_from(["paper", "max_over_sequences", "cv_over_sequences"]),
    "min_value": st.sampled_from([6.0, 100.0, 1e5]),
    "min_layer_share": st.sampled_from([0.25, 0.5, 1.0]),
    "min_token_share": st.sampled_from([0.01, 0.06, 0.5]),
    "tokens": st.sampled_from(["rest", "first", "every"]),
    "token": st.sampled_from(["first", "massive"]),
    "dim": st.integers(0, 70),
    "head": st.sampled_from(["0.0", "1.1", "2.3", "2.9"]),
    "to": st.sampled_from(["first", "massive", "delimiter"]),
    "checkpoint": st.sampled_from(MLP_FLOW),
    "layer": st.integers(0, 3),
    "k": st.integers(1, 4),
    "versus": st.sampled_from(["a", "b"]),
    "site": st.sampled_from(["out", "attn.resid", "mlp.out", "attn.in", "mlp.in"]),
    # bounds inside every measure's range (a bound admitting the whole range is a collection error)
    "between": st.sampled_from([[0.1, 1e9], [-0.5, 0.5], [5, 6]]),
    "at_least": st.floats(0.01, 1e4),
    "at_most": st.floats(-10, 0.99),
    "approx": st.floats(0.1, 1e4),
    "rel": st.floats(0.01, 1),
    "equals": st.sampled_from([0, 3, [1, 2], [], "out"]),
    "subset_of": st.sampled_from([[0], [0, 1, 2]]),
    "contains": st.sampled_from([[0], []]),
    "excludes": st.sampled_from([[5]]),
    "id": st.sampled_from(["c1", "c2"]),
    "vector": st.sampled_from(["v1", "v2", "v3"]),
    "a": st.sampled_from(["v1", "v2"]),
    "b": st.sampled_from(["v2", "v3"]),
    "pairs": st.sampled_from(["refusal", "sentiment", "missing.jsonl"]),
    "window": st.sampled_from(["first:3", "last:2", "all"]),
    "without": st.sampled_from(["massive", "top:2", [1, 3], [999]]),
    "dims": st.sampled_from(["massive", "top:1", [0, 5]]),
    "split": st.sampled_from(["train", "heldout"]),
    "steering": st.sampled_from(["s1", "s2", "s3"]),
    "coef": st.sampled_from([3.0, 4.0, "calibrated", "calibrated_without_massive"]),
}
# Vectors every generated spec may read (from the directory's _defaults.yaml): v3 is past tiny-llama's blocks.
VECTOR_DEFAULTS = """vectors:
  v1: {pairs: sentiment, layer: 1, window: first:3, method: mean_diff}
  v2: {pairs: sentiment, layer: 1, window: last:2, method: probe, clean: massive}
  v3: {pairs: sentiment, layer: 7, window: all, method: pca, clean: {top: 2}}
steering:
  s1: {vector: v1, coefs: [3.0], prompts: 2, max_new_tokens: 2}
  s2: {vector: v2, sweep: {start: calibrated_without_massive, factor: 2, steps: 1}, prompts: 2, max_new_tokens: 2}
  s3: {vector: v3, coefs: [3.0], prompts: 2, max_new_tokens: 2}
"""


def plausible_check(draw) -> dict:
    """A check built for its measure from its schema (required parameters, a bound of the right
    kind), with optional keys drawn from what the measure takes and, now and then, one that does
    not belong."""
    measure = draw(st.sampled_from(sorted(REGISTRY)))
    cls, fields = REGISTRY[measure], for_registry().checks[measure].model_fields
    params = [name for name in cls.model_fields if name != "measure"]
    check = {"measure": measure, **{k: draw(GOOD_VALUES[k]) for k in params if cls.model_fields[k].is_required()}}
    optional = [
        k
        for k in ("layers", "statistic", "to", "checkpoint", "k", "site", "without", "dims", "split", "coef", "tokens", "token")
        if k in fields and k not in check
    ]
    for key in draw(st.lists(st.sampled_from(optional), unique=True, max_size=2)) if optional else []:
        check[key] = draw(GOOD_VALUES[key])
    change = "change" in fields and draw(st.booleans())
    over = "over_layers" in fields and draw(st.booleans())
    if change and over:
        order = [{"change": draw(GOOD_VALUES["change"])}, {"over_layers": draw(GOOD_VALUES["over_layers"])}]
        check["steps"] = order if draw(st.booleans()) else order[::-1]
    elif change:
        check["change"] = draw(GOOD_VALUES["change"])
    elif over:
        check["over_layers"] = draw(GOOD_VALUES["over_layers"])
    if cls.shape in ("layers", "value"):
        bound = draw(st.sampled_from(["at_least", "at_most", "between", "approx"]))
    elif cls.shape == "label":
        bound = "equals"
    else:
        bound = draw(st.sampled_from(["equals", "subset_of", "contains", "excludes"]))
    check[bound] = draw(GOOD_VALUES[bound]) if cls.shape != "set" or bound != "equals" else draw(st.sampled_from([[], [1, 3]]))
    if cls.shape == "label":
        check[bound] = draw(st.sampled_from(list(MLP_FLOW)))
    if draw(st.integers(0, 19)) == 0:  # a key that does not belong here
        check[draw(st.sampled_from(KEYS))] = draw(values)
    return check


@st.composite
def spec_documents(draw, plausible: bool):
    """A spec as a Python structure: plausible (built per measure, so many load) or hostile (any
    keys and values)."""

    def check():
        if plausible:
            return plausible_check(draw)
        keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=6, unique=True))
        return {k: draw(values) for k in keys}

    doc = {
        "id": "f",
        "claim": "c",
        "models": "any",
        "data": {"samples": 2, "seq_len": 12},
        "interventions": {
            name: [draw(st.sampled_from(VALID_INTERVENTIONS if plausible else INTERVENTION_TEXTS))] for name in ("a", "b")
        },
        "checks": [check() for _ in range(draw(st.integers(1, 3)))],
    }
    if draw(st.integers(0, 3)) == 0:
        not_on_a_side = {"between", "at_least", "at_most", "approx", "rel", "equals", "subset_of", "contains", "excludes", "id"}
        sides = {side: {k: v for k, v in check().items() if k not in not_on_a_side} for side in ("a", "b")}
        doc["checks"].append(
            {
                "compare": {**sides, "by": draw(st.sampled_from(["ratio", "difference"]))},
                "at_least": draw(st.floats(0.01, 1e4) | st.floats(allow_nan=True)),
            }
        )
    for _ in range(draw(st.integers(0, 2 if not plausible else 0))):  # drop, replace or add a top-level key
        key = draw(
            st.sampled_from(
                [
                    "id",
                    "claim",
                    "models",
                    "data",
                    "interventions",
                    "checks",
                    "massive",
                    "golden",
                    "xfail",
                    "notes",
                    "source",
                    "extra",
                ]
            )
        )
        action = draw(st.sampled_from(["drop", "set"]))
        if action == "drop":
            doc.pop(key, None)
        else:
            doc[key] = draw(values)
    return doc


@st.composite
def mutated_files(draw):
    """A committed spec file with bytes flipped, lines dropped, duplicated or swapped."""
    text = bytearray(draw(st.sampled_from(COMMITTED)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "drop", "dup", "insert"]))
        lines = bytes(text).split(b"\n")
        index = draw(st.integers(0, max(0, len(lines) - 1)))
        if kind == "flip" and text:
            position = draw(st.integers(0, len(text) - 1))
            text[position] = draw(st.integers(0, 255))
            continue
        if kind == "drop":
            del lines[index]
        elif kind == "dup":
            lines.insert(index, lines[index])
        else:
            lines.insert(
                index,
                draw(
                    st.sampled_from(
                        [
                            b"  - {measure: top1, at_least: .nan}",
                            b"  *alias",
                            b"&a [1]",
                            b"checks: []",
                            b"  - compare: {a: {measure: top1}}",
                            b"\t- x: 1",
                            b"? [a, b]\n: 1",
                            b"[" * 3000 + b"]" * 3000,
                            b"m: !!int a",
                            b"m: !!float a",
                            b"m: !!bool",
                            b"!!map [1]",
                            b"n: " + b"9" * 5000,
                            b"  - {measure: energy_share, vector: v, dims: 'top:100000', at_most: 1}",
                        ]
                    )
                ),
            )
        text = bytearray(b"\n".join(lines))
    return bytes(text)


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):  # spec files may not use aliases; write repeated values out
        return True


def _dump(doc) -> bytes:
    return yaml.dump(doc, Dumper=_NoAliases, allow_unicode=True).encode()


def _load(tmp_path: Path, content: bytes) -> list:
    path = tmp_path / "specs" / "fuzz.yaml"
    path.parent.mkdir(exist_ok=True)
    (path.parent / "_defaults.yaml").write_text(VECTOR_DEFAULTS)
    path.write_bytes(content)
    try:
        return load_file(path)
    except SpecError as error:
        assert error.path == str(path) and str(error).startswith(str(path))
        return []


@fuzz(1000)
@given(doc=spec_documents(plausible=False))
def test_generated_specs_load_or_fail_with_a_spec_error(tmp_path, doc):
    COUNTS["collection"] += 1
    _load(tmp_path, _dump(doc))


@fuzz(1000)
@given(content=mutated_files())
def test_mutated_spec_files_load_or_fail_with_a_spec_error(tmp_path, content):
    COUNTS["collection"] += 1
    _load(tmp_path, content)


@pytest.fixture(scope="module")
def tiny(load_model):
    return ModelSession(load_model("tiny-llama"))


@fuzz(450)
@given(doc=spec_documents(plausible=True))
def test_loaded_specs_evaluate_or_fail_with_a_project_error(tmp_path, tiny, doc):
    COUNTS["generated for evaluation"] += 1
    specs = _load(tmp_path, _dump(doc))
    for spec in specs:
        COUNTS["evaluated"] += 1
        try:
            _, verdict = Evaluator(spec, tiny, spec.data).evaluate()
        except MassiveChecksError:  # e.g. a layer, dim or head tiny-llama does not have
            COUNTS["project errors"] += 1
            continue
        COUNTS["verdicts"] += 1
        assert all(check.rows for check in verdict.checks), "a check with no rows"


# --------------------------------------------------------------------------- hook hygiene

SITES = ["blocks.0.out", "blocks.1.attn.probs", "blocks.1.mlp.down_in", "blocks.2.attn.resid"]


@fuzz(50)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["capture", "intervene", "both"]), st.sampled_from(INTERVENTION_TEXTS[:8]), st.booleans()),
        min_size=1,
        max_size=5,
    )
)
def test_hooks_never_outlive_their_context_and_leave_logits_unchanged(load_model, steps):
    COUNTS["hooks"] += 1
    lm = load_model("tiny-llama")
    batch = ModelSession(lm).batch(DataConfig(samples=2, seq_len=12))
    with torch.no_grad():
        before = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    for kind, text, fail in steps:
        try:
            request = interventions.parse(text)
            intervention = (
                ()
                if kind == "capture" or request.at_massive_cells or request.mode == "mean"
                else interventions.resolve([request], lm.n_layers, lm.n_heads, [(0, 0), (1, 1), (2, 2)])
            )
        except ValueError:
            intervention = ()
        with pytest.raises(RuntimeError) if fail else _nothing():
            with torch.no_grad(), capture_stats(lm, SITES if kind != "intervene" else [], intervention=intervention) as captured:
                captured.forward(lm.model, batch.input_ids, batch.attention_mask)
                if fail:
                    raise RuntimeError("boom inside the hooks")
        assert hooks.hook_count(lm.model) == 0
    with torch.no_grad():
        after = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.equal(before, after)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
