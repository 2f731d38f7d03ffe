"""A run's manifest store: atomic Parquet shards under fsspec, made visible by commit markers.

Layout under a run root:
    manifests/<table>/part-<shard>.parquet    shard files
    manifests/_commits/<shard>.json           commit marker: which files one batch wrote

A batch writes its shard files first and its marker last. Readers see only files named by a marker,
so a crash at any point leaves nothing half-visible; `sweep_orphans` deletes unreferenced files.

`compact` merges many small shards (one per commit, good for resuming) into few large ones (good for DuckDB):
it writes the merged files, then one marker that lists them and `supersedes` the small shards' markers; readers
ignore superseded markers, so the switch is one atomic write, and the superseded files are deleted after it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from core.location import Location
from manifests.integrity import (
    DIGESTS,
    FSCK_HINT,
    file_digest,
    parquet_bytes,
    parse_marker,
    read_checked_shard,
    read_shard,
    seal_marker,
)
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


def temp_path(path: str) -> str:
    """Where an atomic write of `path` on a local disk writes first (swept by pipeline/preflight.py if left)."""
    return f"{path}.tmp-{uuid.uuid4().hex}"


def atomic_write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a file so that readers see either nothing or all of it."""
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = temp_path(path)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:  # a failed write (full disk, ...) leaves no temp file; a killed one is swept (pipeline/preflight.py)
                os.remove(tmp)
            except OSError:
                pass
            raise
    else:
        # Object stores publish a single PUT whole or not at all.
        fs.pipe_file(path, data)


def exclusive_create_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create a file only if nothing exists at `path`; False when it already does (one creator wins)."""
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return True
    # Object stores: a conditional PUT (If-None-Match) where the backend implements mode "create".
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    return True


@dataclass
class ManifestStore:
    fs: fsspec.AbstractFileSystem
    root: str  # run root, without protocol
    # Called with the shard name after its files are written and before its marker (fault-injection tests).
    before_marker: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    # table name -> schema; a release store widens `triples` (publish.release.schema.RELEASE_TABLES)
    schemas: dict[str, pa.Schema] = field(default_factory=lambda: dict(TABLES), repr=False)

    @classmethod
    def open(cls, run_url: Location | str, schemas: dict[str, pa.Schema] | None = None) -> ManifestStore:
        """The store of a run folder (a Location carries its storage options; a plain path or URL has none)."""
        run = Location.of(run_url)
        return cls(run.fs, run.path, schemas=dict(schemas or TABLES))

    @property
    def manifests_dir(self) -> str:
        return f"{self.root}/manifests"

    # -- writing -----------------------------------------------------------------------------------
    def commit(self, shard: str, tables: dict[str, pa.Table], info: dict | None = None) -> None:
        """Write one batch's shards (one per table, empty tables skipped), then its commit marker, which records
        size and sha256 of every file (manifests/integrity.py) and its own sha256."""
        written: dict[str, str] = {}
        digests: dict[str, dict] = {}
        for name, table in tables.items():
            if table.num_rows == 0:
                continue
            data = parquet_bytes(conform(table, self.schemas[name]))
            rel = f"{name}/part-{shard}.parquet"
            atomic_write_bytes(self.fs, f"{self.manifests_dir}/{rel}", data)
            written[name] = rel
            digests[name] = file_digest(data)
        if self.before_marker is not None:
            self.before_marker(shard)
        marker = {"shard": shard, "files": written, "rows": {n: t.num_rows for n, t in tables.items()},
                  DIGESTS: digests, **(info or {})}
        atomic_write_bytes(self.fs, self.marker_path(shard), seal_marker(marker))

    def marker_path(self, shard: str) -> str:
        return f"{self.manifests_dir}/{COMMITS_DIR}/{shard}.json"

    # -- reading -----------------------------------------------------------------------------------
    def markers(self) -> list[dict]:
        pattern = f"{self.manifests_dir}/{COMMITS_DIR}/*.json"
        # other processes (the commit workers) add markers: never answer from a cached listing (s3fs caches them)
        self.fs.invalidate_cache(f"{self.manifests_dir}/{COMMITS_DIR}")
        paths = sorted(self.fs.glob(pattern))
        # one batched read: object stores fetch the markers concurrently instead of one GET after another
        contents = self.fs.cat(paths, on_error="return") if paths else {}
        out = []
        for path in paths:
            data = contents.get(path, FileNotFoundError(path))
            if isinstance(data, FileNotFoundError):  # a marker is written atomically: gone between list and read
                raise RuntimeError(f"unreadable commit marker {path}: {data}; {FSCK_HINT}") from data
            if isinstance(data, Exception):
                raise data
            out.append(parse_marker(path, data))  # DamagedManifestError naming it when damaged
        return out

    def committed_files(self, table: str) -> list[str]:
        """Full paths of the committed shard files of one table, sorted."""
        return self.committed_files_by_table().get(table, [])

    @staticmethod
    def _live(markers: list[dict]) -> list[dict]:
        """The markers no compaction marker supersedes."""
        superseded = {name for m in markers for name in m.get("supersedes", ())}
        return [m for m in markers if m["shard"] not in superseded]

    def live_markers(self) -> list[dict]:
        return self._live(self.markers())

    def committed_files_by_table(self) -> dict[str, list[str]]:
        """table -> full paths of its committed shard files, sorted; one pass over the markers."""
        files: dict[str, set[str]] = {}
        for m in self.live_markers():
            for table, rel in m["files"].items():
                files.setdefault(table, set()).add(rel)
        return {t: [f"{self.manifests_dir}/{rel}" for rel in sorted(rels)] for t, rels in files.items()}

    def read_table(self, table: str, columns: list[str] | None = None) -> pa.Table:
        files = self.committed_files(table)
        schema = self.schemas[table]
        if not files:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        digests = self.file_digests()
        return pa.concat_tables([read_checked_shard(self.fs, f, digests.get(f), columns=columns, schema=schema)
                                 for f in files])

    def file_digests(self) -> dict[str, dict]:
        """Full path -> the size and sha256 its live commit marker recorded (markers written before checksums
        record none)."""
        out: dict[str, dict] = {}
        for m in self.live_markers():
            for table, rel in m["files"].items():
                digest = (m.get(DIGESTS) or {}).get(table)
                if digest:
                    out[f"{self.manifests_dir}/{rel}"] = digest
        return out

    def read_column_set(self, table: str, column: str) -> set[str]:
        return set(self.read_table(table, columns=[column]).column(column).to_pylist())

    def sweep_orphans(self) -> list[str]:
        """Delete shard files and temp files that no live commit marker names (left by a crash), and the
        markers a compaction superseded."""
        markers = self.markers()
        live = self._live(markers)
        referenced = {f"{self.manifests_dir}/{rel}" for m in live for rel in m["files"].values()}
        removed = []
        live_names = {m["shard"] for m in live}
        for m in markers:
            if m["shard"] not in live_names:
                path = f"{self.manifests_dir}/{COMMITS_DIR}/{m['shard']}.json"
                self.fs.rm_file(path)
                removed.append(path)
        for name in self.schemas:
            for path in self.fs.glob(f"{self.manifests_dir}/{name}/*"):
                if path not in referenced:
                    self.fs.rm_file(path)
                    removed.append(path)
        if removed:
            log.info("removed %d uncommitted shard file(s) left by an earlier crash", len(removed))
        return removed

    def compact(self, target_rows: int = 131_072, min_shards: int = 64) -> int:
        """Merge small committed shards into shards of about `target_rows` rows; returns how many were merged.

        Runs only when some table has more than `min_shards` live shards. Only the driver holding the run lock
        calls it. A reader that listed the files just before a compaction may find a superseded file gone and
        has to list again."""
        markers = self.markers()
        live = self._live(markers)
        per_table: dict[str, int] = {}
        for m in live:
            for t in m["files"]:
                per_table[t] = per_table.get(t, 0) + 1
        if not per_table or max(per_table.values()) <= min_shards:
            return 0
        by_name = {m["shard"]: m for m in markers}
        small = sorted((m for m in live if max(m.get("rows", {}).values(), default=0) < target_rows // 2),
                       key=lambda m: m["shard"])
        groups, group, rows = [], [], 0
        for m in small:
            group.append(m)
            rows += max(m.get("rows", {}).values(), default=0)
            if rows >= target_rows:
                groups.append(group)
                group, rows = [], 0
        if len(group) > 1:
            groups.append(group)
        merged = 0
        for group in (g for g in groups if len(g) > 1):
            names = sorted(m["shard"] for m in group)
            shard = f"compact-{hashlib.sha256(chr(10).join(names).encode()).hexdigest()[:20]}"
            tables: dict[str, pa.Table] = {}
            for table in sorted({t for m in group for t in m["files"]}):
                files = [f"{self.manifests_dir}/{m['files'][table]}" for m in group if table in m["files"]]
                tables[table] = pa.concat_tables([read_shard(self.fs, f, schema=self.schemas[table]) for f in files])
            # supersede what the group's markers superseded too, so a crash while deleting them never revives
            # an older shard
            supersedes = set(names)
            todo = list(names)
            while todo:
                for older in by_name.get(todo.pop(), {}).get("supersedes", ()):
                    if older not in supersedes:
                        supersedes.add(older)
                        todo.append(older)
            self.commit(shard, tables, {"phase": "compact", "supersedes": sorted(supersedes)})
            # files first, markers last (a superseded marker is ignored, so either order is safe); one batched
            # call each, which object stores turn into multi-object deletes
            self.fs.rm([f"{self.manifests_dir}/{rel}" for m in group for rel in m["files"].values()])
            self.fs.rm([f"{self.manifests_dir}/{COMMITS_DIR}/{m['shard']}.json" for m in group])
            merged += len(group)
        if merged:
            log.info("compacted %d small manifest shards into %d", merged, len([g for g in groups if len(g) > 1]))
        return merged
