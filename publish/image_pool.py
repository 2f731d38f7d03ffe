"""One content-addressed image pool per releases root, shared by every release made there.

    <releases_root>/_pool/images/<aa>/<sha256><ext>

A release's manifest names each image by a path relative to the release folder (`../_pool/images/...`), so
a second release of the same triples writes no image bytes: an image already in the pool is referenced,
not copied. A new image is hash-checked against the run manifest on the way in and written atomically, so
concurrent writers of the same content (parallel release tasks, two releases at once) are harmless.
`ciep release verify` re-hashes every image a release references, wherever it lives.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from core.location import Location
from manifests.store import atomic_write_bytes

POOL_DIR = "_pool"
LOCAL_FILES = Location("/")  # plain paths in a manifest of a run on an object store


class PoolError(RuntimeError):
    """An image could not be put in the pool (missing or changed since the run wrote it)."""


def source_fs(url: str, run_fs: fsspec.AbstractFileSystem) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and path of an image URL recorded in a run manifest (plain paths: local files)."""
    if "://" not in url:
        return (run_fs if isinstance(run_fs, LocalFileSystem) else LOCAL_FILES.fs), url
    protocol = url.split("://", 1)[0]
    if protocol in (run_fs.protocol if isinstance(run_fs.protocol, tuple) else (run_fs.protocol,)):
        return run_fs, run_fs._strip_protocol(url)
    where = Location(url)  # another store than the run's: reached with no options, as recorded
    return where.fs, where.path


def pool_rel_path(sha256: str, source_path: str) -> str:
    """Where an image lives, relative to the releases root."""
    ext = posixpath.splitext(source_path)[1].lower() or ".png"
    return f"{POOL_DIR}/images/{sha256[:2]}/{sha256}{ext}"


@dataclass
class ImagePool:
    """The pool of one releases root; `put` returns the image's path relative to a release folder."""

    fs: fsspec.AbstractFileSystem
    releases_root: str  # without protocol
    bytes_added: int = 0  # image bytes this object wrote (0 for images the pool already held)
    images_added: int = 0
    images_reused: int = 0

    def put(self, run_fs: fsspec.AbstractFileSystem, url: str, sha256: str) -> tuple[str, int]:
        """Make sure the image with this content is in the pool; (path relative to a release folder, size)."""
        rel = pool_rel_path(sha256, url)
        path = f"{self.releases_root}/{rel}"
        try:
            size = int(self.fs.size(path))
        except FileNotFoundError:
            size = -1
        if size > 0:  # content-addressed: the name is the hash, and verify re-hashes it
            self.images_reused += 1
            return f"../{rel}", size
        src_fs, src = source_fs(url, run_fs)
        try:
            data = src_fs.cat_file(src)
        except FileNotFoundError:
            raise PoolError(f"image {url} named by the run manifest is missing") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise PoolError(f"image {url} changed since the run wrote it: sha256 {actual}, manifest {sha256}")
        atomic_write_bytes(self.fs, path, data)
        self.bytes_added += len(data)
        self.images_added += 1
        return f"../{rel}", len(data)
