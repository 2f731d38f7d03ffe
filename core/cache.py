"""Local copies of remote files and folders (model files, base-model folders): made once, atomically, reused."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import fsspec

from core.hashing import sha256_bytes
from core.location import Location

log = logging.getLogger(__name__)


def cache_file(fs: fsspec.AbstractFileSystem, remote: str, origin: str, cache_dir: str) -> Path:
    """Copy a remote file into the cache once (atomic rename); reuse it while the size matches."""
    key = hashlib.sha256(origin.encode()).hexdigest()[:16]
    dest = Path(cache_dir).expanduser() / key / Path(remote).name
    size = fs.size(remote)
    if dest.is_file() and (size is None or dest.stat().st_size == size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        fs.get_file(remote, str(tmp))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("copied %s to %s", origin, dest)
    return dest


def default_cache_dir() -> Path:
    return Path(os.environ.get("CIEP_CACHE_DIR", Path.home() / ".cache" / "ciep"))


def ensure_local_folder(url: str, cache_dir: str | Path | None = None) -> Path:
    """A local folder with the contents of `url`: the folder itself when local, else a cached copy.

    The copy is made in a temporary folder and renamed into place, so a half-finished copy is never used.
    """
    where = Location.of(url)  # no options: base-model folders are local or reached through the environment
    if where.is_local:
        return Path(where.path)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    dest = root / "folders" / sha256_bytes(url.encode())[:20]
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fs, path = where.fs, where.path
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
