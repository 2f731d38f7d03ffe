"""fsspec helpers for model folders: remote-folder caching and small-file IO (hashing: core/hashing.py)."""

from __future__ import annotations

from pathlib import Path

import fsspec
from fsspec.core import url_to_fs


def join(url: str | Path, *parts: str) -> str:
    """url/part/part for local paths and fsspec URLs alike."""
    return "/".join([str(url).rstrip("/"), *parts])


def read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as fh:
        return fh.read()


def write_bytes(url: str, data: bytes) -> None:
    fs, path = url_to_fs(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(data)


def exists(url: str) -> bool:
    fs, path = url_to_fs(url)
    return fs.exists(path)
