"""One content-addressed image pool per releases root, shared by every release made there.

    <releases_root>/_pool/images/<aa>/<sha256><ext>

A release's manifest names each image by a path relative to the release folder (`../_pool/images/...`), so
a second release of the same triples writes no image bytes: an image already in the pool is referenced,
not copied. A new image is hash-checked against the run manifest on the way in and written atomically, so
concurrent writers of the same content (parallel release tasks, two releases at once) are harmless. On a local
disk the images of a batch are written under temporary names and made durable together (`flush`: one disk flush
for the batch, not one per image) before they get their names; a pool name always means the whole content.
`ciep release verify` re-hashes every image a release references, wherever it lives.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import posixpath
from dataclasses import dataclass, field

import fsspec
from fsspec.implementations.local import LocalFileSystem

from core.location import Location
from manifests.store import atomic_write_bytes, temp_path

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


def _sync_filesystem_of(path: str) -> None:
    """syncfs(2) of the filesystem that holds `path` (Linux: only that disk), else sync(2)."""
    syncfs = getattr(ctypes.CDLL(None), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        syncfs(fd)
    finally:
        os.close(fd)


@dataclass
class ImagePool:
    """The pool of one releases root; `put` returns the image's path relative to a release folder."""

    fs: fsspec.AbstractFileSystem
    releases_root: str  # without protocol
    bytes_added: int = 0  # image bytes this object wrote (0 for images the pool already held)
    images_added: int = 0
    images_reused: int = 0
    # written under a temporary name, not yet flushed: final path -> (temporary path, size); local disks only
    pending: dict[str, tuple[str, int]] = field(default_factory=dict)

    def put(self, run_fs: fsspec.AbstractFileSystem, url: str, sha256: str) -> tuple[str, int]:
        """Make sure the image with this content is in the pool (a new one on a local disk: once `flush`ed);
        (path relative to a release folder, size)."""
        rel = pool_rel_path(sha256, url)
        path = f"{self.releases_root}/{rel}"
        try:
            size = self.pending[path][1] if path in self.pending else int(self.fs.size(path))
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
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            tmp = temp_path(path)
            with open(tmp, "wb") as fh:
                fh.write(data)
            self.pending[path] = (tmp, len(data))
        else:
            atomic_write_bytes(self.fs, path, data)  # an object store publishes a PUT whole or not at all
        self.bytes_added += len(data)
        self.images_added += 1
        return f"../{rel}", len(data)

    def flush(self) -> None:
        """Make the images written since the last flush durable, then give them their names (call it before
        anything that references them is committed). One `syncfs` writes the whole batch back with one journal
        commit; the fsync of each file after it finds nothing left to write, and reports a write error if any."""
        if not self.pending:
            return
        _sync_filesystem_of(next(iter(self.pending.values()))[0])
        for tmp, _ in self.pending.values():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for path, (tmp, _) in self.pending.items():
            os.replace(tmp, path)
        self.pending.clear()

    def discard(self) -> None:
        """Remove the temporary files of images not flushed (the task failed before committing them)."""
        for tmp, _ in self.pending.values():
            try:
                os.remove(tmp)
            except OSError:
                pass
        self.pending.clear()
