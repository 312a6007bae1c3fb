"""Ratio helpers for the benchmarks: interleaved timing in one process, and the table printed at
the end of the run (conftest.py)."""

from __future__ import annotations

import time

from massive_checks.engine.transfer import wait_for_device as synchronize

RATIOS: list[tuple[str, float, str]] = []  # (what, ratio, target)


def interleaved_ratio(target, reference, rounds: int = 5, clock=time.perf_counter) -> tuple[float, float, float]:
    """min time of target / min time of reference, calls alternating (one warm-up each). clock:
    time.process_time measures the host's cpu time (all threads) instead of the wall clock."""
    target(), reference(), synchronize()
    times: dict[str, list[float]] = {"target": [], "reference": []}
    for _ in range(rounds):
        for name, fn in (("target", target), ("reference", reference)):
            start = clock()
            fn()
            synchronize()
            times[name].append(clock() - start)
    t, r = min(times["target"]), min(times["reference"])
    return t / r, t, r


def record(what: str, ratio: float, target: str = "") -> None:
    RATIOS.append((what, ratio, target))
