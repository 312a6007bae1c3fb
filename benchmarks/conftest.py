"""Benchmarks (pytest-benchmark), not part of the CI test run:

    .venv/bin/python -m pytest benchmarks/ -p no:cacheprovider --benchmark-columns=min,mean,rounds

Each benchmark times a capture and its reference in one process, interleaved (min over rounds),
and reports the ratio; the table of ratios is printed at the end of the run. The plugin's own
options pick what is measured: the first --model (default SmolLM2-135M), --device (on CUDA every
timed call ends with a synchronize) and --dtype (default float32)."""

from __future__ import annotations

import pytest
import torch
from ratios import RATIOS

from massive_checks.base.constants import SMOLLM2
from massive_checks.engine import models


def _load_arguments(config) -> dict:
    """What the benchmarks load: models.load's keyword arguments, from the plugin's options."""
    return {
        "name": (config.getoption("--model") or [SMOLLM2])[0],
        "device": config.getoption("--device"),
        "dtype": config.getoption("--dtype"),
    }


@pytest.fixture(scope="session")
def setup(pytestconfig) -> dict:
    return _load_arguments(pytestconfig)


@pytest.fixture(scope="session")
def lm(setup):
    torch.manual_seed(0)
    torch.set_num_threads(1)  # ratios on one thread, as in the measurements
    return models.load(**setup)


@pytest.fixture(scope="session")
def long_texts(tmp_path_factory) -> str:
    """32 passages of ~3,500 tokens each (the built-in passages joined, each line starting at
    another one), for sequence lengths the built-in passages (~130 tokens) cannot reach."""
    from massive_checks.language.data import read_passages

    passages = read_passages("builtin")
    lines = [" ".join(passages[i:] + passages[:i]) for i in range(32)]
    path = tmp_path_factory.mktemp("long") / "long.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def pytest_terminal_summary(terminalreporter):
    if not RATIOS:
        return
    setup = _load_arguments(terminalreporter.config).values()
    terminalreporter.section(
        f"massive_checks: ratios, {', '.join(setup)} (measured in this process, interleaved, min over rounds)"
    )
    for what, ratio, target in RATIOS:
        verdict = ""
        if target:
            limit = float(target.split("<=")[1].rstrip("x"))
            verdict = "  meets target" if ratio <= limit else "  ABOVE target"
        terminalreporter.write_line(f"{what:<70} {ratio:6.2f}x  {target}{verdict}")
