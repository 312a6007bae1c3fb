"""examples/user_project, a user's project that extends the spec language through
massive_checks.api only, passes as its README says: under pytest and under pytest -n 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).parent.parent / "examples" / "user_project"


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_example_project_passes(tmp_path, workers):
    project = tmp_path / "user_project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("reports", "__pycache__", ".benchmarks"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *workers],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "3 passed" in run.stdout  # two specs (the user measure, the user intervention) and the judge's test


def test_a_user_intervention_target_parses_like_a_built_in_one():
    from massive_checks.language import interventions

    interventions.register_target("scale", "out")  # what the example's api.register_intervention does
    with pytest.raises(ValueError, match="registered twice"):
        interventions.register_target("scale", "mlp.out")
    with pytest.raises(ValueError, match="not built in"):
        interventions.register_target("dims", "out")

    request = interventions.parse("scale:3,4@1#0=value:0.5")
    (ablation,) = interventions.resolve([request], 3, 4)
    assert (ablation.target, ablation.layer, ablation.units, ablation.tokens, ablation.value) == ("scale", 1, (3, 4), (0,), 0.5)
    with pytest.raises(ValueError, match="not one of"):
        interventions.parse("scal:3@1")
    with pytest.raises(ValueError, match="need @LAYERS"):
        interventions.parse("scale:3")


ENTRY_POINT_RUN = """
import sys
from importlib import metadata

class EntryPoint:  # what an installed package's `massive_checks.measures` entry point is
    name, value = "user_extensions", "user_extensions"

    def load(self):
        import user_extensions
        return user_extensions

real = metadata.entry_points
metadata.entry_points = lambda group=None, **kw: [EntryPoint()] if group == "massive_checks.measures" else real(group=group, **kw)
from massive_checks.cli import main
sys.exit(main(["schema"]))
"""


def test_an_entry_point_measure_is_in_the_schema():
    """A measure a package declares as an entry point (group massive_checks.measures) is in
    `massive-checks schema`, which editors validate specs with; without it, it is not."""
    import json

    def schema(code: str) -> str:
        run = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        return json.dumps(json.loads(run.stdout))

    assert '"top1_share"' in schema(ENTRY_POINT_RUN)
    assert '"top1_share"' not in schema("import sys; from massive_checks.cli import main; sys.exit(main(['schema']))")
