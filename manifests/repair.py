"""`ciep fsck --repair`: take what fsck found out of the run so that the next run redoes exactly those items.

- A bad commit marker, or a marker naming a bad file: the marker is moved to `<run>/quarantine/<stamp>/` first
  (that one step withdraws the whole commit: its files are no longer committed), then its files. The items of
  that commit have no row any more, so the next run processes them again. A withdrawn compaction marker takes
  the markers it superseded with it (their files are gone).
- A bad image: the rows that name it are taken out of their commits (an aligned crop: its `sources` row; a
  transfer or reference: its candidate's `candidates`, `qc`, `triples`, `rejects` and `attempts` rows). Each
  such commit is replaced the way compaction replaces shards: a new marker lists the filtered files and
  `supersedes` the old one (one atomic write), then the old marker, its files and the image go to quarantine.
  A candidate without a `qc` row is not done (pipeline/done.py), a source without a `sources` row is ingested
  again, and both rewrite their images.

The caller holds the run lock (no driver may commit meanwhile).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
import uuid
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
from fsspec.implementations.local import LocalFileSystem

from manifests.fsck import FsckReport
from manifests.integrity import parse_marker, read_shard
from manifests.store import COMMITS_DIR, ManifestStore

QUARANTINE_DIR = "quarantine"

# table -> its id column, for the rows an undone item leaves: a source's or a candidate's
_SOURCE_ROWS = {"sources": "source_id"}
_CANDIDATE_ROWS = {"candidates": "candidate_id", "qc": "candidate_id", "triples": "triple_id",
                   "rejects": "item_id", "attempts": "item_id"}


@dataclass
class RepairResult:
    quarantine: str
    withdrawn: list[str] = field(default_factory=list)  # commits taken out whole
    rewritten: list[str] = field(default_factory=list)  # commits replaced without an undone item's rows
    undone_sources: list[str] = field(default_factory=list)
    undone_candidates: list[str] = field(default_factory=list)
    moved: int = 0  # files moved to quarantine

    def summary(self) -> str:
        return (f"repair: {len(self.withdrawn)} commit(s) withdrawn, {len(self.rewritten)} rewritten without "
                f"{len(self.undone_sources)} source(s) and {len(self.undone_candidates)} candidate(s) whose images "
                f"were bad; {self.moved} file(s) moved to {self.quarantine}; rerun the run's config to redo them")


def _move(fs: fsspec.AbstractFileSystem, src: str, dst: str) -> bool:
    """Move a file (a rename on a local disk; copy then delete on an object store, the delete being the step
    that withdraws it). False when it is not there."""
    if not fs.exists(src):
        return False
    if isinstance(fs, LocalFileSystem):
        os.makedirs(posixpath.dirname(dst), exist_ok=True)
        os.replace(src, dst)
    else:
        fs.copy(src, dst)
        fs.rm_file(src)
    return True


class _Repair:
    def __init__(self, store: ManifestStore) -> None:
        self.store = store
        stamp = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.result = RepairResult(f"{store.root}/{QUARANTINE_DIR}/{stamp}")

    def quarantine(self, path: str) -> None:
        rel = path[len(self.store.root) + 1:]
        if _move(self.store.fs, path, f"{self.result.quarantine}/{rel}"):
            self.result.moved += 1

    def markers(self) -> dict[str, dict]:
        """shard -> marker of the markers that parse (a damaged one is withdrawn by name)."""
        fs, out = self.store.fs, {}
        fs.invalidate_cache(f"{self.store.manifests_dir}/{COMMITS_DIR}")
        for path in sorted(fs.glob(f"{self.store.manifests_dir}/{COMMITS_DIR}/*.json")):
            try:
                marker = parse_marker(path, fs.cat_file(path))
            except Exception:  # noqa: BLE001 - damaged: withdrawn by its file name
                continue
            out[marker["shard"]] = marker
        return out

    def withdraw(self, shard: str, marker: dict | None) -> None:
        """The marker first (the commit is gone in that step), then the files it names."""
        self.quarantine(self.store.marker_path(shard))
        files = [f"{self.store.manifests_dir}/{rel}" for rel in marker["files"].values()] if marker else \
            sorted(self.store.fs.glob(f"{self.store.manifests_dir}/*/part-{shard}.parquet"))
        for path in files:
            self.quarantine(path)
        self.result.withdrawn.append(shard)

    def rewrite_without(self, marker: dict, undone: dict[str, set[str]]) -> bool:
        """Replace a commit by one without the undone items' rows; False when it holds none of them."""
        store, tables, hit = self.store, {}, False
        for table, rel in marker["files"].items():
            t = read_shard(store.fs, f"{store.manifests_dir}/{rel}", schema=store.schemas[table])
            col = {**_SOURCE_ROWS, **_CANDIDATE_ROWS}.get(table)
            ids = undone.get(table)
            if col and ids:
                keep = pc.invert(pc.is_in(t[col], value_set=pa.array(sorted(ids), pa.string())))
                hit |= t.num_rows != pc.sum(keep.cast(pa.int64())).as_py()
                t = t.filter(keep)
            tables[table] = t
        if not hit:
            return False
        old = marker["shard"]
        shard = f"repair-{hashlib.sha256(old.encode()).hexdigest()[:20]}"
        supersedes = sorted({old, *marker.get("supersedes", ())})
        info = {k: v for k, v in marker.items() if k in ("phase", "round", "decision_version")}
        store.commit(shard, tables, {**info, "supersedes": supersedes, "repair_of": old})
        self.withdraw(old, marker)
        self.result.withdrawn.pop()
        self.result.rewritten.append(old)
        return True


def repair_run(store: ManifestStore, report: FsckReport) -> RepairResult:
    """Act on an fsck report of this store (see the module doc); the caller holds the run lock."""
    rep = _Repair(store)
    markers = rep.markers()
    bad = {p.shard for p in report.problems if p.shard}
    for shard in sorted(bad):  # a compaction marker takes what it superseded with it
        bad |= {old for old in markers.get(shard, {}).get("supersedes", ()) if old in markers}
    for shard in sorted(bad):
        rep.withdraw(shard, markers.get(shard))
    undone: dict[str, set[str]] = {}
    for problem in (p for p in report.problems if p.items):
        for table, item in problem.items:
            for t in (_SOURCE_ROWS if table == "sources" else _CANDIDATE_ROWS):
                undone.setdefault(t, set()).add(item)
        rep.quarantine(problem.path)
    rep.result.undone_sources = sorted(undone.get("sources", ()))
    rep.result.undone_candidates = sorted(undone.get("candidates", ()))
    if undone:
        live = ManifestStore._live([m for s, m in markers.items() if s not in bad])
        for marker in sorted(live, key=lambda m: m["shard"]):
            rep.rewrite_without(marker, undone)
    return rep.result
