"""Notices of a long first use (dequantizing a GGUF, minutes in silence otherwise): who hears them
(the pytest plugin adds a writer to its terminal, the CLI prints to stderr) and a progress line
every PROGRESS_EVERY seconds while a step inside a library reports nothing of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from massive_checks.base.constants import GEMMA3, SMOLLM2

NOTICES: list[Callable[[str], None]] = []  # who hears a notice: the plugin's terminal writer, the CLI's stderr
DEQUANTIZE_SECONDS = {SMOLLM2: 17, GEMMA3: 35}  # measured on 2 CPU cores


PROGRESS_EVERY = 10.0  # seconds between progress lines of a long step


def notice(message: str) -> None:
    for write in NOTICES:
        write(message)


@contextmanager
def progress(name: str, doing: str, expected: float | None) -> Iterator[None]:
    """While the block runs, a notice every PROGRESS_EVERY seconds: a bar of the elapsed time
    against the expected (a step inside a library reports nothing of its own), e.g.
    `gemma3-270m: dequantizing [###############-----] 26 s of about 35 s`."""
    import threading
    import time

    started, done = time.perf_counter(), threading.Event()

    def tick() -> None:
        while not done.wait(PROGRESS_EVERY):
            elapsed = time.perf_counter() - started
            if expected:
                filled = min(20, round(20 * elapsed / expected))
                notice(f"{name}: {doing} [{'#' * filled}{'-' * (20 - filled)}] {elapsed:.0f} s of about {expected} s")
            else:
                notice(f"{name}: {doing}, {elapsed:.0f} s so far")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
