"""fsspec helpers for model folders: remote-folder caching and small-file IO (hashing: core/hashing.py)."""

from __future__ import annotations

from pathlib import Path

import fsspec
from fsspec.core import url_to_fs


def join(url: str | Path, *parts: str) -> str:
    """url/part/part for local paths and fsspec URLs alike."""
    return "/".join([str(url).rstrip("/"), *parts])


# fsspec options for read_bytes / write_bytes / exists when a call passes none: the run's storage options while
# training (pipeline/train_adapter.py sets them on the driver and in every Ray Train worker).
_default_options: dict = {}


def set_storage_options(options: dict | None) -> None:
    """Use these fsspec options for the adapter and checkpoint files of this process."""
    global _default_options
    _default_options = dict(options or {})


def read_bytes(url: str, storage_options: dict | None = None) -> bytes:
    with fsspec.open(url, "rb", **(storage_options if storage_options is not None else _default_options)) as fh:
        return fh.read()


def write_bytes(url: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write a file atomically (temp file + rename locally, one PUT on object stores)."""
    from manifests.store import atomic_write_bytes

    fs, path = url_to_fs(url, **(storage_options if storage_options is not None else _default_options))
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    atomic_write_bytes(fs, path, data)


def exists(url: str, storage_options: dict | None = None) -> bool:
    fs, path = url_to_fs(url, **(storage_options if storage_options is not None else _default_options))
    return fs.exists(path)
