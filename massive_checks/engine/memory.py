"""Running out of memory: how it is recognised (CPU, accelerator, a failed mmap or import), and the
one message that says what was running and what to lower."""

from __future__ import annotations

import gc
import re

import torch


def out_of_memory(exc: BaseException) -> bool:
    """CPU MemoryError (Python's allocations), an accelerator out of memory (torch.OutOfMemoryError),
    or what says so in its text: torch's CPU allocator, a failed mmap of the weights (ENOMEM), a
    library that cannot map its code (an import under a tight address-space limit)."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    said = str(exc)
    return isinstance(exc, (RuntimeError, OSError, ImportError)) and any(
        words in said for words in ("can't allocate memory", "Cannot allocate memory", "failed to map segment", "out of memory")
    )


def release_memory(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


LOAD_ADVICE = "use --dtype bfloat16 (half float32's memory), or spread the model over devices with --device-map auto"
PASS_ADVICE = (
    "lower --samples or --seq-len, set fewer sequences a chunk with --batch-size N, or use --dtype bfloat16 "
    "(half float32's memory)"
)


def memory_message(name: str, dtype, device, what: str, error: BaseException, advice: str = PASS_ADVICE) -> str:
    """One message for running out of memory: the model, dtype, device, what was running (its
    batch x tokens), the memory asked for where the error says, and what to lower."""
    asked = re.search(r"(?:allocate|Tried to allocate) ([0-9.]+ ?[KMGT]?i?B|[0-9]+ bytes)", str(error))
    wanted = f"; it asked for {asked.group(1)}" if asked else ""
    return f"out of memory: model {name!r}, {str(dtype).removeprefix('torch.')} on {device}, {what}{wanted}; {advice}"
