"""Reports: figures for every spec, the HTML page, claims tables, xdist merging; scans and diffs."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
from test_plugin import PLANTED_SPECS

from massive_checks import cli
from massive_checks.engine.synthetic import PLANT
from massive_checks.output import html, tables


@pytest.fixture
def suite(pytester):
    pytester.mkdir("specs")
    (pytester.path / "specs" / "planted.yaml").write_text(
        PLANTED_SPECS
        + f"""
---
id: planted-ablation
claim: Removing block {PLANT["layer"]}'s MLP removes the planted activation.
models: [planted-llama]
data: {{samples: 4, seq_len: 32}}
interventions:
  no_mlp: ["mlp:{PLANT["layer"]}"]
checks:
  - {{measure: top1, change: [baseline, no_mlp], layers: {PLANT["layer"]}-3, at_most: -0.9}}
---
id: planted-heads
claim: Some head attends to position 0.
models: [planted-llama]
data: {{samples: 4, seq_len: 32}}
checks:
  - {{measure: head_rank, head: "0.0", at_most: 100}}
"""
    )
    return pytester


def test_report_has_a_figure_for_every_spec_and_tables(suite):
    result = suite.runpytest("specs", "--model", "planted-llama", "--report-dir", "out")
    result.assert_outcomes(passed=3, failed=1, xfailed=1, deselected=1)
    out = suite.path / "out"
    results = json.loads((out / "results.json").read_text())["results"]
    assert len(results) == 5
    for record in results:
        assert (out / record["figure"]).stat().st_size > 10_000, record["spec"]
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "show only failures" in page
    assert "planted-wrong-bound" in page and "class='spec failing'" in page and "Claims x models" in page
    markdown = (out / "claims.md").read_text()
    assert "\n| claim | planted-llama |\n" in markdown  # a column per model
    assert "contradicted (planted-wrong-bound: " in markdown  # the claim verdict, then its specs
    assert ": {37} (layers 1-3)" in markdown and "frozenset" not in markdown  # sets as {37}, layer ranges
    assert "-99.9% [-99.9%, -99.9%] to -99.9% [-99.9%, -99.9%] (layers 1-3)" in markdown  # percent, with intervals
    latex = (out / "claims.tex").read_text()
    assert "\\begin{longtable}" in latex and "\\end{longtable}" in latex


def test_claims_tables_have_a_column_per_model():

    def record(spec, model, status, observed):
        return {
            "spec": spec,
            "model": model,
            "claim": f"claim {spec}",
            "path": "s.yaml",
            "line": 1 if spec == "a" else 9,
            "status": status,
            "checks": [
                {
                    "description": "top1 [baseline]",
                    "ok": status == "passed",
                    "rows": [{"where": "layer 11", "expected": ">= 1", "observed": observed, "ok": True}],
                }
            ],
        }

    results = [record("a", "m1", "passed", 22695.9), record("a", "m2", "failed", 3.0), record("b", "m2", "passed", [163])]
    markdown = tables.claims_markdown(results)
    assert "| claim | m1 | m2 |" in markdown  # a spec naming no catalogue claim is its own row
    assert (
        "| a: claim a | undecided (a: 2.27e+04 (layer 11); expected >= 1) | undecided (a: 3 (layer 11); expected >= 1) |"
        in markdown
    )
    assert (
        "| b: claim b | not testable: no spec states it for this model | undecided (b: {163} (layer 11); expected >= 1) |"
        in markdown
    )
    assert "m1 & m2" in tables.claims_latex(results)


def test_xdist_workers_results_are_merged(suite):
    result = suite.runpytest(
        "specs", "--model", "planted-llama", "--report-dir", "out", "-n", "2", "--dist", "loadgroup", "-p", "no:benchmark"
    )
    result.assert_outcomes(passed=3, failed=1, xfailed=1)
    results = json.loads((suite.path / "out" / "results.json").read_text())
    assert sorted(r["spec"] for r in results["results"]) == [
        "planted-ablation",
        "planted-dim",
        "planted-heads",
        "planted-known-false",
        "planted-wrong-bound",
    ]
    assert "planted-llama" in results["models"]
    assert not (suite.path / "out" / ".parts").exists()  # records travel on xdist's channel, never via side files
    result.stdout.fnmatch_lines(["worker gw*: * of * cores*"])  # each worker says its share of the cores


def test_xdist_workers_load_each_model_once(pytester):
    """Items carry their model's xdist_group: with --dist loadgroup each model's specs run in one
    worker, which loads it once; the controller sums the workers' loads."""
    pytester.mkdir("specs")
    specs = "".join(
        f"---\nid: s{i}\nclaim: c\ndata: {{samples: 2, seq_len: 12}}\nchecks:\n  - {{measure: top1, layers: 0, at_least: 1.0e-6}}\n"
        for i in range(3)
    )
    (pytester.path / "specs" / "s.yaml").write_text(specs)
    result = pytester.runpytest(
        "specs",
        "--model",
        "planted-llama",
        "--model",
        "tiny-llama",
        "--report-dir",
        "out",
        "-n",
        "2",
        "--dist",
        "loadgroup",
        "-p",
        "no:benchmark",
    )
    result.assert_outcomes(passed=6)
    for model in ("planted-llama", "tiny-llama"):  # workers finish in either order
        result.stdout.fnmatch_lines([f"{model}: llama, *; loaded 1 time"])


def test_the_model_group_is_read_from_a_spec_items_id():
    from massive_checks.plugin import model_of_nodeid

    assert model_of_nodeid("specs/a.yaml::c7[EleutherAI/pythia-160m@step1000]") == "EleutherAI/pythia-160m@step1000"
    assert model_of_nodeid("specs/a.yml::c7[/models/x.gguf]") == "/models/x.gguf"
    assert model_of_nodeid("tests/test_a.py::test_b[gpt2]") is None  # not a spec item: xdist's own grouping
    assert model_of_nodeid("specs/a.yaml::c7") is None


def test_a_test_reading_a_models_spec_results_joins_its_group():
    from massive_checks.plugin import model_of_test

    names = ("smollm2-135m", "gemma3-270m")
    assert model_of_test("tests/t.py::test_x[smollm2-135m:smollm2-c14-norms]", names) == "smollm2-135m"
    assert model_of_test("tests/t.py::test_x[gpt2:c7]", names) is None  # not a model of this session
    assert model_of_test("tests/t.py::test_x", names) is None


def test_figures_are_closed(suite):
    before = len(plt.get_fignums())
    suite.runpytest("specs", "--model", "planted-llama", "--report-dir", "out", "-k", "ablation")
    assert len(plt.get_fignums()) == before


def test_scan_finds_the_plant_and_its_draft_spec_passes(pytester, capsys):
    out = pytester.path / "scan"
    assert cli.main(["scan", "planted-llama", "--samples", "6", "--seq-len", "32", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["massive_dims"] == [PLANT["dim"]] and summary["emergence_layer"] == PLANT["layer"]
    assert summary["explosion_point"] in ("down_in", "out")
    assert summary["ablation"]["no_mlp"]["change"][PLANT["layer"]] < -0.9
    for name in ("index.html", "scan.json", "profile.png", "heads.png", "ablation.png", "mlp.png"):
        assert (out / name).is_file(), name
    (spec_file,) = (out / "specs").glob("*.yaml")
    assert (out / "golden" / "planted-llama" / f"{spec_file.stem}.json").is_file()
    result = pytester.runpytest(str(out / "specs"), "--model", "planted-llama", "--golden-dir", str(out / "golden"))
    result.assert_outcomes(passed=1)


def test_diff_of_two_checkpoints(capsys):
    assert cli.main(["diff", "planted-llama", "tiny-llama", "--samples", "4", "--seq-len", "32", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["massive_dims"]["only_a"] == [PLANT["dim"]] and result["massive_dims"]["b"] == []
    assert result["emergence_layer"] == {"a": PLANT["layer"], "b": None}
    assert result["layers"][PLANT["layer"]]["change"] < -0.9


def test_claims_matrix_has_a_row_per_catalogue_claim_with_values_and_intervals():

    def record(spec, model, claims, verdict, status):
        row = {
            "where": "value",
            "expected": ">= 0.5",
            "observed": 0.61,
            "interval": [0.55, 0.68],
            "ok": verdict == "holds",
            "verdict": verdict,
        }
        return {
            "spec": spec,
            "model": model,
            "claim": f"claim {spec}",
            "path": "s.yaml",
            "line": 1,
            "claims": claims,
            "status": status,
            "verdict": verdict,
            "expected": "holds",
            "checks": [{"description": "loss [baseline]", "ok": row["ok"], "verdict": verdict, "rows": [row]}],
        }

    results = [
        record("s1", "m1", ["C7"], "holds", "passed"),
        record("s2", "m2", ["C7", "C10"], "inconclusive", "failed"),
        record("s3", "m2", [], "holds", "passed"),
    ]
    models, rows = tables.claims_matrix(results)
    assert models == ["m1", "m2"] and [claim for claim, _, _ in rows] == ["C7", "C10", "s3"]  # catalogue order, then the rest
    markdown = tables.claims_markdown(results)
    text = tables.catalogue()["C7"]
    assert (
        f"| C7: {text} | holds (s1: 0.61 [0.55, 0.68]; expected >= 0.5) | undecided (s2: 0.61 [0.55, 0.68]; expected >= 0.5) |"
        in markdown
    )
    page = html._matrix_html(results)
    assert page.count("<tr>") == 4 and "badge inconclusive" in page and "no spec on this model" in page


def test_claim_rows_have_one_verdict_per_model_and_measured_specs_are_listed_apart():
    """A claim's verdict on a model combines its claim specs there (one contradicted: contradicted);
    a model that could not be loaded is not testable, with the reason; a measured spec (bounds from
    the model's own numbers) is a regression guard, never a cell of a claim's row."""

    def record(spec, model, verdict, kind="claim", status="passed"):
        row = {"where": "value", "expected": ">= 1", "observed": 2.0, "interval": [1.5, 2.5], "ok": True, "verdict": verdict}
        return {
            "spec": spec,
            "model": model,
            "claim": f"claim {spec}",
            "claims": ["C13"],
            "kind": kind,
            "status": status,
            "verdict": verdict,
            "checks": [{"description": "loss", "ok": True, "verdict": verdict, "rows": [row]}],
        }

    results = [
        record("zero", "m1", "holds"),
        record("mean", "m1", "contradicted", status="xfailed"),
        record("zero", "m2", "holds"),
        record("guard", "m2", "contradicted", kind="measured"),
    ]
    unavailable = {"gpt2": "the hub is not reachable"}
    models, rows = tables.claims_matrix(results, unavailable)
    assert models == ["gpt2", "m1", "m2"] and [r[0] for r in rows] == ["C13"]
    _, _, by_model = rows[0]
    assert tables.claim_verdict(by_model.get("m1")) == "contradicted"
    assert tables.claim_verdict(by_model.get("m2")) == "holds"  # the measured guard is not part of it
    assert tables.claim_verdict(None, unavailable["gpt2"]) == "not testable: the hub is not reachable"
    markdown = tables.claims_markdown(results, unavailable)
    assert "## Regression guards" in markdown and "| guard | m2 |" in markdown
    latex = tables.claims_latex(results, unavailable)
    assert r"\begin{longtable}" in latex and r"\endhead" in latex and "not testable: the hub is not reachable" in latex


def test_the_reference_table_puts_the_sources_value_beside_each_models():
    """A check's `reference` (never judged) is one row across models, keyed by claim and check."""

    def record(spec, model, observed, verdict, reference="+8.2 (Gemma 3 4B)"):
        row = {
            "where": "value",
            "expected": ">= 2",
            "observed": observed,
            "interval": [observed - 1, observed + 1],
            "ok": verdict == "holds",
            "verdict": verdict,
        }
        check = {"description": "difference of a and b", "ok": row["ok"], "verdict": verdict, "rows": [row]}
        return {
            "spec": spec,
            "model": model,
            "claim": "c",
            "path": "s.yaml",
            "line": 1,
            "claims": ["C17"],
            "status": "passed",
            "verdict": verdict,
            "expected": "holds",
            "checks": [{**check, "reference": reference} if reference else check],
        }

    results = [
        record("a-c17", "m1", 5.0, "holds"),
        record("b-c17", "m2", -3.0, "contradicted"),
        record("c-c17", "m3", 1.0, "inconclusive", reference=None),
    ]
    models, rows = tables.reference_table(results)
    assert rows == [
        ("C17", "difference of a and b", "+8.2 (Gemma 3 4B)", {"m1": "5 [4, 6]: holds", "m2": "-3 [-4, -2]: contradicted"})
    ]
    markdown = tables.claims_markdown(results)
    assert "| C17 | difference of a and b | +8.2 (Gemma 3 4B) | 5 [4, 6]: holds | -3 [-4, -2]: contradicted | - |" in markdown
    assert "The source's values vs the models'" in html._reference_html(results)
    assert tables.reference_table([record("a", "m1", 5.0, "holds", reference=None)])[1] == []


def test_a_spec_check_carries_its_reference(tmp_path):
    from massive_checks.language import load_file

    (tmp_path / "s.yaml").write_text('claim: c\nchecks:\n  - {measure: loss, at_most: 4, reference: "3.1 nats (GPT-2)"}\n')
    assert load_file(tmp_path / "s.yaml")[0].checks[0].reference == "3.1 nats (GPT-2)"


def test_figures_leave_the_matplotlib_backend_alone(tmp_path):
    """figures.save prints a bare Figure through Agg without choosing a backend for the process."""
    import matplotlib
    from matplotlib.figure import Figure

    from massive_checks.output import figures

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend the user chose (pyplot is not switched through it here)
    try:
        fig = Figure()
        fig.add_subplot().plot([0, 1], [1, 0])
        figures.save(fig, tmp_path / "f.png", "a title")
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(before)


def _observation(panels, profiles=None, changes=False):
    from massive_checks.output.records import Observation

    profile = {"top1": [1.0, 50.0, 40.0], "top2": [1.0, 20.0, 10.0], "top3": [1.0, 5.0, 4.0], "median": [0.5, 0.6, 0.7]}
    return Observation(
        spec_id="s",
        claim="a claim",
        model="m",
        path="p",
        line=1,
        source="",
        notes="",
        profiles=profiles or {"baseline": profile},
        changes=changes,
        panels=panels,
    )


def test_every_panel_a_spec_returns_is_drawn_and_one_kind_merges(tmp_path):
    """Panels of several kinds are all laid out (none dropped by a fixed order), panels of one kind
    from several checks merge their entries, and a panel class written outside the package is
    drawn like the built-in ones: a new figure is one class."""
    from dataclasses import dataclass

    from massive_checks.measures import panels
    from massive_checks.output import figures
    from massive_checks.output.records import Verdict

    drawn = []

    @dataclass(frozen=True)
    class Marker(panels.Panel):
        label: str

        def draw(self, axes, fig):
            drawn.append((self.label, len(axes)))
            axes[0].plot([0, 1], [0, 1])

    flows = [panels.FlowPanel({3: {"in": 1.0, "out": 9.0}}), panels.FlowPanel({4: {"in": 2.0, "out": 8.0}})]
    steering = panels.SteeringPanel(
        {
            "probe": {
                "coefs": [1.0, 10.0],
                "trait": [1, 9],
                "coherence": [99, 60],
                "baseline_trait": 0.0,
                "threshold": 70,
                "calibrated": {},
            }
        }
    )
    ablated = _observation([*flows, steering, Marker("mine")], {"baseline": {"top1": [1.0, 2.0]}, "mlp": {"top1": [1.0, 1.5]}})
    layout = figures.layout(ablated)
    assert [type(p).__name__ for p in layout] == ["AblationPanel", "FlowPanel", "SteeringPanel", "Marker"]
    assert list(layout[1].flows) == [3, 4]  # both checks' layers, in order
    fig, axes = figures.new_figure(layout)
    assert [len(a) for a in axes] == [2, 1, 2, 1] and len(fig.axes) == 6
    assert figures.render(ablated, Verdict([]), tmp_path / "f.png").stat().st_size > 1000
    assert drawn == [("mine", 1)]
    assert [type(p).__name__ for p in figures.layout(_observation([steering]))] == ["SteeringPanel"]  # no profile asked
    assert [type(p).__name__ for p in figures.layout(_observation(flows[:1]))] == ["ProfilePanel", "FlowPanel"]
    assert [type(p).__name__ for p in figures.layout(_observation([]))] == ["ProfilePanel"]
