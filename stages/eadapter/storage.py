"""fsspec helpers: hashing, remote-folder caching and small-file IO for model folders."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """sha256 of a local file, memoised per process on (path, size, mtime)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(8 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def is_local(url: str) -> bool:
    fs, _ = url_to_fs(url)
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def local_path(url: str) -> str:
    """The local path of a file:// URL or plain path."""
    _, path = url_to_fs(url)
    return path


def default_cache_dir() -> Path:
    return Path(os.environ.get("CIEP_CACHE_DIR", Path.home() / ".cache" / "ciep"))


def ensure_local_folder(url: str, cache_dir: str | Path | None = None) -> Path:
    """A local folder with the contents of `url`: the folder itself when local, else a cached copy.

    The copy is made in a temporary folder and renamed into place, so a half-finished copy is never used.
    """
    if is_local(url):
        return Path(local_path(url))
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    dest = root / "folders" / sha256_bytes(url.encode())[:20]
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fs, path = url_to_fs(url)
    if not fs.isdir(path):
        raise FileNotFoundError(f"model folder {url} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=dest.parent))
    try:
        fs.get(path.rstrip("/") + "/", str(tmp) + "/", recursive=True)
        try:
            tmp.rename(dest)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


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
