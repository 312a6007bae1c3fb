"""The cores of one machine, shared by the pytest-xdist workers of one run.

Each worker runs torch on its share of the cores, cores // active workers (at least 1): two
workers each running a thread per core on 2 cores ran the suite 1.45x slower than one process.
A worker with nothing left to run says so (a file in a directory of the run), and the workers
still busy take its cores before their next spec: with `--dist loadgroup` one model's specs often
finish long before the other's. A thread count the user set (OMP_NUM_THREADS, MKL_NUM_THREADS)
is kept."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """The cores this process may run on (its affinity; a container's cpu set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class CoreShare:
    def __init__(self, run_id: str, worker: str, workers: int):
        self.worker, self.workers, self.cores = worker, max(1, workers), available_cores()
        self.fixed = any(os.environ.get(name) for name in THREAD_VARIABLES)
        self.idle_dir = Path(tempfile.gettempdir()) / f"massive_checks-cores-{run_id}"
        self.idle_dir.mkdir(exist_ok=True)
        self.rebalance()

    def threads(self) -> int:
        import torch

        return torch.get_num_threads()

    def describe(self) -> str:
        if self.fixed:
            return f"{self.threads()} threads of {self.cores} cores (set by the environment)"
        share = max(1, self.cores // self.workers)
        return f"{share} thread{'s' * (share != 1)} of {self.cores} cores ({self.workers} workers; more once others are idle)"

    def rebalance(self) -> None:
        """Before a spec: this worker is busy; its share is cores // the workers not idle."""
        try:
            (self.idle_dir / self.worker).unlink(missing_ok=True)
            idle = sum(1 for path in self.idle_dir.iterdir() if path.name != self.worker)
        except OSError:  # the directory went with the last worker out: nobody else is idle
            idle = 0
        if self.fixed:
            return
        import torch

        share = max(1, self.cores // max(1, self.workers - idle))
        if share != torch.get_num_threads():
            torch.set_num_threads(share)

    def idle(self) -> None:
        """This worker has run everything it was given (more may come: rebalance says busy again).
        Best effort: a file-system error only leaves the others on their share."""
        try:
            self.idle_dir.mkdir(exist_ok=True)
            (self.idle_dir / self.worker).touch()
        except OSError:
            pass

    def close(self) -> None:
        """This worker is done for good: idle; the last one out removes the directory."""
        self.idle()
        try:
            done = list(self.idle_dir.iterdir())
            if len(done) >= self.workers:
                for path in done:
                    path.unlink(missing_ok=True)
                self.idle_dir.rmdir()
        except OSError:
            pass
