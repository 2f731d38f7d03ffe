"""Reading releases: names, errors, opening one (`Release`), listing them, their manifest stores."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field

import fsspec

from core.hashing import sha256_fs_file
from core.location import Location
from manifests.store import ManifestStore
from publish.release.schema import RELEASE_TABLES

RELEASE_INFO = "release.json"
INFO_CHECKSUM = "info_sha256"  # release.json's own sha256 (of its other keys, canonical JSON)
CARD = "README.md"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ReleaseError(RuntimeError):
    """A release could not be made or read."""


class ReleaseExistsError(ReleaseError):
    """The release name is taken (published, or claimed by a create in progress or one that crashed)."""


class ReleaseNotFoundError(ReleaseError, FileNotFoundError):
    """No published release of that name."""


def default_releases_root(output_root: str) -> str:
    return f"{output_root.rstrip('/')}/releases"


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ReleaseError(f"invalid release name {name!r}: use letters, digits, '.', '_', '-' "
                           "(not starting with '.', '_' or '-')")
    return name


def info_checksum(info: dict) -> str:
    """The sha256 release.json records of itself (absent from releases made before it)."""
    canonical = json.dumps({k: v for k, v in info.items() if k != INFO_CHECKSUM}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_digest(fs: fsspec.AbstractFileSystem, path: str) -> dict:
    """A release file's facts as release.json lists them: sha256 and size in bytes."""
    digest, size = sha256_fs_file(fs, path)
    return {"sha256": digest, "bytes": size}


@dataclass
class Release:
    """A published release: its folder and what release.json says about it."""

    name: str
    fs: fsspec.AbstractFileSystem
    root: str  # the release folder, without protocol
    info: dict = field(repr=False)

    @property
    def store(self) -> ManifestStore:
        return ManifestStore(self.fs, self.root, schemas=dict(RELEASE_TABLES))

    def path(self, rel: str) -> str:
        """A manifest path (relative to the release folder; pool images are `../_pool/...`) made absolute."""
        return posixpath.normpath(f"{self.root}/{rel}")

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    @property
    def splits(self) -> list[str]:
        return list(self.info.get("splits", {}))


def open_release(releases_root: Location | str, name: str) -> Release:
    root = Location.of(releases_root)
    folder = root.sub_path(validate_name(name))
    try:
        info = json.loads(root.fs.cat_file(f"{folder}/{RELEASE_INFO}"))
    except FileNotFoundError:
        raise ReleaseNotFoundError(f"no release {name!r} under {root.url!r}") from None
    return Release(name, root.fs, folder, info)


def open_release_url(url: Location | str) -> Release:
    """A release given by its own folder (anything holding a release.json)."""
    where = Location.of(url)
    fs, folder = where.fs, where.path
    try:
        info = json.loads(fs.cat_file(f"{folder}/{RELEASE_INFO}"))
    except FileNotFoundError:
        raise ReleaseNotFoundError(f"{where.url!r} holds no {RELEASE_INFO}") from None
    return Release(info.get("name", posixpath.basename(folder)), fs, folder, info)


def list_releases(releases_root: Location | str) -> list[dict]:
    """release.json of every published release, oldest first."""
    root = Location.of(releases_root)
    if not root.fs.exists(root.path):
        return []
    out = [json.loads(root.fs.cat_file(p)) for p in root.fs.glob(f"{root.path}/*/{RELEASE_INFO}")]
    return sorted(out, key=lambda i: (i.get("created_at", ""), i.get("name", "")))


def release_stores(root: Location | str, names: list[str]) -> dict[str, ManifestStore]:
    """Manifest stores of named releases, for `manifests.query.connect`. `root` is a releases root or an
    output root (whose `releases/` folder is then used)."""
    releases_root = Location.of(root)
    if names and not releases_root.exists(names[0], RELEASE_INFO):
        releases_root = releases_root.join("releases")
    return {name: open_release(releases_root, name).store for name in names}
