"""sha256 of bytes, local files (streamed, memoised per process) and fsspec files: the one home for hashing."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

_CHUNK = 8 << 20
_lock = threading.Lock()
_file_cache: dict[tuple[str, int, int], str] = {}


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Streamed hex sha256 of a local file, memoised per process on (real path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    with _lock:
        if key in _file_cache:
            return _file_cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _lock:
        _file_cache[key] = digest
    return digest


def sha256_fs_file(fs: Any, path: str) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a file on an fsspec filesystem, streamed."""
    h = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
