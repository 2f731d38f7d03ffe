"""ManifestStore.compact: many small commit shards become few large ones; a reader (Arrow and DuckDB, through a
store of its own) sees the same rows before, after, and at each step in between (each merged shard written but
not yet committed, earlier groups already committed and their old shards deleted); and a crash at either point of
a compaction (before the merged shard's marker, after it before the old shards are deleted) leaves a consistent
store. The reader runs at those steps, called from the compaction's commit hook, not in a thread beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from manifests.query import connect
from manifests.schemas import REJECTS
from manifests.store import COMMITS_DIR, ManifestStore
from tests.hardening.conftest import uncommitted_files


def _fill(store: ManifestStore, shards: int = 90, rows: int = 7) -> pa.Table:
    parts = []
    for k in range(shards):
        t = pa.table({"item_id": [f"i{k:03d}-{r}" for r in range(rows)], "round": pa.array([0] * rows, pa.int32()),
                      "stage": ["ingest"] * rows, "reason": ["decode_error"] * rows, "detail": [None] * rows,
                      "identity": [f"id{k}"] * rows, "path": [None] * rows, "run_id": ["r"] * rows,
                      "attempt": pa.array([1] * rows, pa.int32()), "transient": [False] * rows}, schema=REJECTS)
        store.commit(f"ingest-{k:04d}", {"rejects": t})
        parts.append(t)
    return pa.concat_tables(parts).sort_by("item_id")


def _rows(store: ManifestStore) -> pa.Table:
    return store.read_table("rejects").sort_by("item_id")


def test_compaction_keeps_every_row_once_and_cuts_the_files(tmp_path: Path):
    store = ManifestStore.open(str(tmp_path / "run"))
    expected = _fill(store)
    assert store.compact(target_rows=200, min_shards=200) == 0  # under the threshold: nothing happens
    merged = store.compact(target_rows=200, min_shards=64)
    assert merged == 90
    files = store.committed_files("rejects")
    assert len(files) == 4 and all("/part-compact-" in f for f in files)  # 90 x 7 rows in groups of >= 200
    assert _rows(store).equals(expected)
    con = connect(store)
    assert con.execute("select count(*), count(distinct item_id) from rejects").fetchone() == (630, 630)
    assert uncommitted_files(store) == [] and store.sweep_orphans() == []
    assert store.compact(target_rows=200, min_shards=64) == 0  # idempotent


def test_a_reader_sees_every_row_once_at_each_step_of_a_compaction(tmp_path: Path):
    run = str(tmp_path / "run")
    store = ManifestStore.open(run)
    expected = _fill(store)
    seen: list[tuple[str, int, int, bool]] = []

    def read_now(shard: str) -> None:  # called between a merged shard's files and its commit marker
        reader = ManifestStore.open(run)
        rows = _rows(reader)
        count, distinct = connect(reader).execute("select count(*), count(distinct item_id) from rejects").fetchone()
        seen.append((shard, count, distinct, rows.equals(expected)))
    store.before_marker = read_now
    assert store.compact(target_rows=200, min_shards=64) == 90
    assert len(seen) == 4 and all(s.startswith("compact-") for s, *_ in seen)  # one step per merged group
    assert [s[1:] for s in seen] == [(630, 630, True)] * 4, seen
    assert _rows(ManifestStore.open(run)).equals(expected)


def test_crash_before_the_compaction_marker(tmp_path: Path):
    store = ManifestStore.open(str(tmp_path / "run"))
    expected = _fill(store)

    def crash(shard: str) -> None:
        if shard.startswith("compact-"):
            raise KeyboardInterrupt("killed before the marker")
    store.before_marker = crash
    with pytest.raises(KeyboardInterrupt):
        store.compact(target_rows=200, min_shards=64)
    store.before_marker = None
    assert _rows(store).equals(expected)  # the merged file is there, but nothing names it
    assert len(uncommitted_files(store)) == 1
    store.sweep_orphans()
    assert uncommitted_files(store) == [] and _rows(store).equals(expected)


def test_crash_after_the_marker_before_the_old_shards_are_deleted(tmp_path: Path):
    store = ManifestStore.open(str(tmp_path / "run"))
    expected = _fill(store)
    saved = tmp_path / "saved"
    shutil.copytree(store.manifests_dir, saved)
    store.compact(target_rows=200, min_shards=64)
    # put the superseded markers and files back: the state of a driver killed right after the compaction marker
    for f in saved.rglob("*"):
        if f.is_file():
            dest = Path(store.manifests_dir) / f.relative_to(saved)
            if not dest.exists():
                shutil.copy(f, dest)
    assert len(list((Path(store.manifests_dir) / COMMITS_DIR).glob("ingest-*.json"))) == 90
    assert _rows(store).equals(expected)  # superseded markers are ignored: no row twice
    assert connect(store).execute("select count(*) from rejects").fetchone()[0] == 630
    removed = store.sweep_orphans()
    assert len(removed) == 180  # 90 superseded markers + their 90 files
    assert _rows(store).equals(expected)
    # a second compaction over a compacted store that still had superseded markers: nothing is revived
    store.compact(target_rows=10_000, min_shards=2)
    assert _rows(store).equals(expected) and len(store.committed_files("rejects")) == 1
