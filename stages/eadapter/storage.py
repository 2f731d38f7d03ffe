"""fsspec helpers for adapter and checkpoint files: small-file IO through a `Location` (hashing: core/hashing.py).

A `Location` carries the storage options that reach the file (the run's, while training: pipeline/train_adapter.py
builds it once from run.storage_options); a plain path or URL is reached with no options.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.location import Location


def join(url: str | Path, *parts: str) -> str:
    """url/part/part for local paths and fsspec URLs alike."""
    return "/".join([str(url).rstrip("/"), *parts])


def read_bytes(where: Location | str | os.PathLike[str]) -> bytes:
    return Location.of(where).read_bytes()


def write_bytes(where: Location | str | os.PathLike[str], data: bytes) -> None:
    """Write a file atomically (temp file + rename locally, one PUT on object stores)."""
    from manifests.store import atomic_write_bytes

    file = Location.of(where)
    fs, path = file.fs, file.path
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    atomic_write_bytes(fs, path, data)


def exists(where: Location | str | os.PathLike[str]) -> bool:
    return Location.of(where).exists()
