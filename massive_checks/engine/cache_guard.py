"""A model cache folder that checks itself: a manifest of its files' sizes and hashes, written last;
one builder at a time per folder (a lock file); stale staging folders removed. gguf_cache.py builds
caches through it; docs/reliability.md lists the faults it is tested against."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from massive_checks.base.files import locked

MANIFEST = "manifest.json"  # {"files": {name: {"size": bytes, "sha256": hex}}}, written last
HASHED_AT_LOAD = 64 << 20  # files up to this size are hashed at every load (~0.1 s); larger ones by size and header
STAGING = ".staging-"  # a folder being written: .staging-<cache name>-<random>


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record every file's size and hash; the last file a build writes (its marker of completeness)."""
    files = {
        path.name: {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def problem(folder: Path, full: bool = False) -> str | None:
    """What is wrong with a cache folder, or None: no manifest (a partial build), a file missing or
    of another size, a small file (or, with `full`, any file) whose hash differs, or a safetensors
    file whose header does not describe its size (a truncation the size check would also catch)."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is missing or unreadable (an interrupted build)"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected.get("size"):
            return f"{name} has {size} bytes, its manifest says {expected.get('size')}"
        if (full or size <= HASHED_AT_LOAD) and file_sha256(path) != expected.get("sha256"):
            return f"{name} does not match its SHA-256"
        if name.endswith(".safetensors"):
            broken = safetensors_problem(path)
            if broken:
                return f"{name}: {broken}"
    return None


def safetensors_problem(path: Path) -> str | None:
    """Reads the header only: an 8-byte length, JSON, and tensors whose data ends at the file's end."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length)) if length < (100 << 20) else None
    except (OSError, struct.error, ValueError, UnicodeDecodeError):
        return "its header is unreadable"
    if not isinstance(header, dict):
        return "its header is unreadable"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    if 8 + length + max(ends, default=0) != path.stat().st_size:
        return "its header describes another size"
    return None


@contextmanager
def building(folder: Path) -> Iterator[None]:
    """Hold the folder's build lock (waiting for another process's build to finish): concurrent
    first uses build once. Stale staging folders of this cache are removed under the lock: only
    the lock's holder writes them, so none is in use."""
    with locked(folder.parent / f"{folder.name}.lock"):
        for stale in folder.parent.glob(f"{STAGING}{folder.name}-*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        yield


def staging_for(folder: Path) -> Path:
    """A fresh staging folder beside `folder` (call under `building`)."""
    path = folder.parent / f"{STAGING}{folder.name}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def publish(staging: Path, folder: Path) -> None:
    """The manifest written last, then the staging folder renamed into place (atomic)."""
    write_manifest(staging)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
