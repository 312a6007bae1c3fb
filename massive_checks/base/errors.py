"""Domain errors. Each carries enough context to be printed as-is, without a traceback."""

from __future__ import annotations


class MassiveChecksError(Exception):
    """Base class: the message is meant for the user, not for a debugger."""


class SpecError(MassiveChecksError):
    """A spec file is malformed: names the file, line and key path."""

    def __init__(self, path: str, line: int | None, key: str, message: str):
        self.path, self.line, self.key = path, line, key
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class ModelUnavailable(MassiveChecksError):
    """A requested model cannot be loaded here; says what to do about it."""


class UnsupportedArchitecture(MassiveChecksError):
    """No adapter maps this architecture's modules to canonical sites."""


class DataError(MassiveChecksError):
    """A dataset file is missing, empty or has the wrong format."""


class GoldenError(MassiveChecksError):
    """A golden snapshot is corrupt or cannot be compared."""


class ActivationOverflow(MassiveChecksError):
    """An activation was inf/nan, e.g. a massive value past float16's 65504."""


class ReportError(MassiveChecksError):
    """The report folder cannot be written (full disk, permissions)."""


class OutOfMemory(MassiveChecksError):
    """A load or pass ran out of memory (CPU MemoryError, CUDA out of memory): what was asked and
    what to lower, never a traceback."""


def first_line(exc: BaseException) -> str:
    """An exception's first line, for messages that quote a library's error in a sentence."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
