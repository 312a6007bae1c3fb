"""Writing files: atomically (never a half-written report or golden) and JSON-safe."""

from __future__ import annotations

import fcntl
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

# The steps of atomic_write, in order; a test sets WRITE_FAULT to fail (or kill) the writer at one
# of them (fault injection: cheap and deterministic). None in normal use.
WRITE_STEPS = ("created", "written", "synced", "replaced")
WRITE_FAULT: Callable[[str, Path], None] | None = None


def atomic_write(path: Path, content: str | bytes) -> None:
    """Write a temporary file in the same directory, flush it to disk, rename it over `path`: the
    file is the old one or the new one, never a part, also when the writer is killed or the disk
    fills (the error propagates; the temporary file is removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report or golden is for everyone to read
        _step("created", path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content if isinstance(content, bytes) else content.encode("utf-8"))
            _step("written", path)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not reach the disk before the data
        _step("synced", path)
        os.replace(tmp, path)
        _step("replaced", path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _step(name: str, path: Path) -> None:
    if WRITE_FAULT is not None:
        WRITE_FAULT(name, path)


@contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if missing), waiting while another process
    (or another open of it in this one) holds it; released on exit, also on errors."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def folder_lock(folder: Path) -> AbstractContextManager[None]:
    """`folder`'s lock: two runs writing one report folder write their files one run after the
    other, never interleaved."""
    return locked(folder / ".lock")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def jsonable(value: Any) -> Any:
    """Sets -> sorted lists, tuples -> lists, inf/nan -> strings: JSON-safe and comparable."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    return value
