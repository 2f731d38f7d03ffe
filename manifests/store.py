"""A run's manifest store: atomic Parquet shards under fsspec, made visible by commit markers.

Layout under a run root:
    manifests/<table>/part-<shard>.parquet    shard files
    manifests/_commits/<shard>.json           commit marker: which files one batch wrote

A batch writes its shard files first and its marker last. Readers see only files named by a marker,
so a crash at any point leaves nothing half-visible; `sweep_orphans` deletes unreferenced files.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from manifests.schemas import TABLES, conform

log = logging.getLogger(__name__)

COMMITS_DIR = "_commits"


def full_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URL to record in a manifest row for a path of `fs` (plain path for local files)."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def shard_key(ids: Iterable[str], prefix: str = "") -> str:
    """Deterministic shard name from the ids it holds: reruns of the same batch overwrite, never add."""
    h = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:20]
    return f"{prefix}{h}"


def atomic_write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a file so that readers see either nothing or all of it."""
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:
        # Object stores publish a single PUT whole or not at all.
        fs.pipe_file(path, data)


@dataclass
class ManifestStore:
    fs: fsspec.AbstractFileSystem
    root: str  # run root, without protocol

    @classmethod
    def open(cls, run_url: str, storage_options: dict | None = None) -> "ManifestStore":
        fs, root = fsspec.core.url_to_fs(run_url, **(storage_options or {}))
        return cls(fs, root.rstrip("/"))

    @property
    def manifests_dir(self) -> str:
        return f"{self.root}/manifests"

    # -- writing -----------------------------------------------------------------------------------
    def commit(self, shard: str, tables: dict[str, pa.Table], info: dict | None = None) -> None:
        """Write one batch's shards (one per table, empty tables skipped), then its commit marker."""
        written: dict[str, str] = {}
        for name, table in tables.items():
            if table.num_rows == 0:
                continue
            table = conform(table, TABLES[name])
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd")
            rel = f"{name}/part-{shard}.parquet"
            atomic_write_bytes(self.fs, f"{self.manifests_dir}/{rel}", buf.getvalue())
            written[name] = rel
        marker = {"shard": shard, "files": written, "rows": {n: t.num_rows for n, t in tables.items()},
                  **(info or {})}
        atomic_write_bytes(self.fs, f"{self.manifests_dir}/{COMMITS_DIR}/{shard}.json",
                           json.dumps(marker, sort_keys=True).encode())

    # -- reading -----------------------------------------------------------------------------------
    def markers(self) -> list[dict]:
        pattern = f"{self.manifests_dir}/{COMMITS_DIR}/*.json"
        out = []
        for path in sorted(self.fs.glob(pattern)):
            try:
                out.append(json.loads(self.fs.cat_file(path)))
            except (json.JSONDecodeError, FileNotFoundError) as err:  # a marker is written atomically
                raise RuntimeError(f"unreadable commit marker {path}: {err}") from err
        return out

    def committed_files(self, table: str) -> list[str]:
        """Full paths of the committed shard files of one table, sorted."""
        files = {m["files"][table] for m in self.markers() if table in m["files"]}
        return [f"{self.manifests_dir}/{rel}" for rel in sorted(files)]

    def read_table(self, table: str, columns: list[str] | None = None) -> pa.Table:
        files = self.committed_files(table)
        schema = TABLES[table]
        if not files:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        parts = [pq.read_table(self.fs.open(f, "rb"), columns=columns, schema=schema) for f in files]
        return pa.concat_tables(parts)

    def read_column_set(self, table: str, column: str) -> set[str]:
        return set(self.read_table(table, columns=[column]).column(column).to_pylist())

    def sweep_orphans(self) -> list[str]:
        """Delete shard files and temp files that no commit marker names (left by a crash)."""
        referenced = {f"{self.manifests_dir}/{rel}" for m in self.markers() for rel in m["files"].values()}
        removed = []
        for name in TABLES:
            for path in self.fs.glob(f"{self.manifests_dir}/{name}/*"):
                if path not in referenced:
                    self.fs.rm_file(path)
                    removed.append(path)
        if removed:
            log.info("removed %d uncommitted shard file(s) left by an earlier crash", len(removed))
        return removed
