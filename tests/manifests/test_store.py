from pathlib import Path

import pyarrow as pa
import pytest

from manifests.query import NAMED_QUERIES, connect, run_query
from manifests.schemas import REJECTS, TABLES
from manifests.store import ManifestStore, shard_key


def _rejects(ids: list[str]) -> pa.Table:
    return pa.Table.from_pylist([dict(item_id=i, round=0, stage="ingest", reason="no_face", detail=None,
                                      identity="x", path=f"/c/{i}", run_id="r") for i in ids], schema=REJECTS)


def test_commit_makes_shards_visible_and_orphans_are_swept(tmp_path: Path):
    store = ManifestStore.open(str(tmp_path / "run"))
    store.commit(shard_key(["a", "b"]), {"rejects": _rejects(["a", "b"])})
    # A crash between a shard write and its marker: the file exists but no marker names it.
    orphan = tmp_path / "run" / "manifests" / "rejects" / "part-orphan.parquet"
    orphan.write_bytes(b"half a parquet file")
    assert store.read_column_set("rejects", "item_id") == {"a", "b"}
    con = connect(store)
    assert con.execute("select count(*) from rejects").fetchone()[0] == 2
    removed = store.sweep_orphans()
    assert [Path(p).name for p in removed] == ["part-orphan.parquet"]
    assert not orphan.exists()


def test_shard_key_is_order_independent_and_rewrites_do_not_duplicate(tmp_path: Path):
    assert shard_key(["b", "a"]) == shard_key(["a", "b"])
    store = ManifestStore.open(str(tmp_path / "run"))
    for _ in range(2):
        store.commit(shard_key(["a"]), {"rejects": _rejects(["a"])})
    assert store.read_table("rejects").num_rows == 1


def test_schema_is_enforced(tmp_path: Path):
    store = ManifestStore.open(str(tmp_path / "run"))
    with pytest.raises(ValueError, match="lacks columns"):
        store.commit("x", {"rejects": pa.table({"item_id": ["a"]})})


def test_named_queries_run_on_an_empty_run(tmp_path: Path):
    con = connect(ManifestStore.open(str(tmp_path / "empty")))
    for name in NAMED_QUERIES:
        cols, rows = run_query(con, name)
        assert cols and rows == []
    for table in TABLES:
        assert con.execute(f"select count(*) from {table}").fetchone()[0] == 0
