"""One storage location: a URL, its fsspec filesystem and the storage options that reach it (like datatrove's
DataFolder). Passed around instead of a URL plus `storage_options` threaded by hand, so every reader and writer
of a place (run folder, releases root, export target, corpus) reaches the same endpoint with the same options.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from core.config import StorageOptions


@dataclass(frozen=True)
class Location:
    """A folder (local path or fsspec URL) with the options to reach it; sub-locations keep the options."""

    url: str
    storage_options: StorageOptions = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", os.fspath(self.url).rstrip("/") or "/")  # a pathlib.Path works too

    @classmethod
    def of(cls, where: Location | str | os.PathLike[str]) -> Location:
        """`where` itself if it is a Location, else a Location of the path or URL with no options (local files,
        or a store reached through the environment's defaults)."""
        if isinstance(where, Location):
            return where
        return cls(os.fspath(where))

    @cached_property
    def _resolved(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs, path.rstrip("/") or "/"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._resolved[0]

    @property
    def path(self) -> str:
        """The folder's path on `fs` (no protocol)."""
        return self._resolved[1]

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def join(self, *parts: str) -> Location:
        """A sub-folder (or file) of this location, with the same options."""
        sub = Location(posixpath.join(self.url, *parts), self.storage_options)
        if "_resolved" in self.__dict__:  # share the filesystem instance
            sub.__dict__["_resolved"] = (self.fs, posixpath.join(self.path, *parts))
        return sub

    def at(self, url: str) -> Location:
        """Another place reached with this location's options: a file URL recorded under it (a manifest's image
        path, a corpus file), an index file, a target given on the command line."""
        return Location(url, self.storage_options)

    def sub_path(self, *parts: str) -> str:
        """The path on `fs` of a file under this location."""
        return posixpath.join(self.path, *parts)

    def full_url(self, path: str) -> str:
        """The URL to record for a path of `fs` (plain path for local files)."""
        return path if self.is_local else str(self.fs.unstrip_protocol(path))

    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self.sub_path(*parts)))

    def read_bytes(self, *parts: str) -> bytes:
        data: bytes = self.fs.cat_file(self.sub_path(*parts))
        return data

    def open(self, *parts: str, mode: str = "rb") -> Any:
        """Open a file under this location (the location itself with no parts); like `fsspec.open`, writing
        creates the parent folder."""
        path = self.sub_path(*parts)
        if "r" not in mode:
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)
        return self.fs.open(path, mode)

    def open_url(self, url: str, mode: str = "rb") -> Any:
        """Open a URL recorded under this location (a manifest's image path) with this location's options."""
        return fsspec.open(url, mode, **self.storage_options)

    def __reduce__(self) -> tuple[Any, ...]:  # pickles without the filesystem (Ray actors rebuild it)
        return (Location, (self.url, dict(self.storage_options)))
