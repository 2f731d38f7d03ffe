"""The lazy datasources of pipeline/lazy_datasource.py and pipeline/planning/datasource.py: ingest's table in
small blocks, and the planner's write-ahead window over the plan files' readers."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray

from core.location import Location
from pipeline.lazy_datasource import TableDatasource
from pipeline.planning import datasource
from pipeline.planning.datasource import ReadAhead, plan_file_runs
from pipeline.planning.files import failure_url, plan_file_urls, write_plan_files
from pipeline.ray_adapter import dataset_from_plan_files, dataset_from_table, table_read_tasks
from tests.waiting import locals_in, wait_until


def listing(n: int) -> pa.Table:
    """A listing-like table: a path per image and a few small columns."""
    i = pa.array(range(n), pa.int64())
    identity = pc.binary_join_element_wise("id", pc.cast(pc.divide(i, 10), pa.string()), "")
    key = pc.binary_join_element_wise(identity, pc.utf8_lpad(pc.cast(i, pa.string()), 7, "0"), "/img_")
    return pa.table({"input_key": pc.binary_join_element_wise(key, ".jpg", ""), "identity": identity,
                     "attempt": pa.nulls(n, pa.int32()).fill_null(0)})


def test_table_datasource_reads_the_rows_in_order_in_small_blocks(ray_session):
    table = listing(1003)
    source = TableDatasource(table, 8)
    tasks = source.get_read_tasks(4)
    assert len(tasks) == 4 and source.num_blocks() == 126
    assert [t.metadata.num_rows for t in tasks] == [256, 256, 256, 235]
    assert all(t.schema == table.schema for t in tasks)
    blocks = [block for task in tasks for block in task.read_fn()]
    assert [b.num_rows for b in blocks] == [8] * 125 + [3]
    assert pa.concat_tables(blocks).equals(table)
    assert [b.num_rows for t in TableDatasource(table.slice(0, 0), 8).get_read_tasks(4) for b in t.read_fn()] == [0]


def test_ingest_dataset_is_lazy_and_keeps_its_blocks(ray_session, monkeypatch):
    def no_from_arrow(*args: object, **kwargs: object) -> None:
        raise AssertionError("from_arrow runs one task per block before the dataset exists")
    monkeypatch.setattr(ray.data, "from_arrow", no_from_arrow)
    # 1M rows: made from the table's size alone (one object in the store, no task until the dataset runs),
    # 1,017 read tasks of 123 blocks
    big = TableDatasource(listing(1_000_000), 8)
    tasks = big.get_read_tasks(table_read_tasks(big.num_blocks()))
    assert len(tasks) == 1017 and {t.metadata.num_rows for t in tasks[:-1]} == {984}
    table = listing(200)
    ds = dataset_from_table(table, 50)
    refs = [entry for bundle in ds.iter_internal_ref_bundles() for entry in bundle.block_refs]
    blocks = ray.get(refs)
    assert [b.num_rows for b in blocks] == [50] * 4
    # up to 1,024 blocks: one task per block, so the blocks are those of the table, the same rows in order
    ordered = sorted(blocks, key=lambda b: b["input_key"][0].as_py().split("/img_")[1])
    assert pa.concat_tables(ordered).to_pylist() == table.to_pylist()


def test_planner_writes_a_bounded_window_ahead_of_the_readers(tmp_path: Path, ray_session):
    run = Location(str(tmp_path / "run"))
    urls, failure = plan_file_urls(run, 0, 12), failure_url(run, 0)
    ahead = ReadAhead(len(urls), 2)
    assert ReadAhead(2, 2).reads is None  # a round of `ahead` files or fewer starts no actor
    planned: list[int] = []

    def chunks():  # type: ignore[no-untyped-def]
        for k in range(12):
            planned.append(k)
            yield pa.table({"candidate_id": [f"c{k:03d}-{i}" for i in range(3)]})

    writer = threading.Thread(target=write_plan_files,
                              args=(ahead.paced(chunks()), pa.array([], pa.string()), urls, run))
    def held_at(index: int) -> bool:
        """The planner waits to write file `index` (asking the reads actor), or has gone past it."""
        waiting = locals_in(writer, "wait_to_write", in_a_call=True)
        return not writer.is_alive() or len(planned) > index or (waiting is not None and waiting["index"] >= index)

    writer.start()
    wait_until(lambda: held_at(2), "the planner to wait before file 2")
    assert planned == [0, 1] and writer.is_alive()  # no reader yet: the first `ahead` files only
    ahead.reads.reading(6)  # type: ignore[union-attr]  # a reader asks for a later file first
    wait_until(lambda: held_at(9), "the planner to wait before file 9")
    assert len(planned) == 9 and writer.is_alive()  # up to file 8 = 6 + ahead
    rows = dataset_from_plan_files(urls, failure, run, None, ahead.reads).take_all()
    writer.join(timeout=60)
    assert not writer.is_alive()
    assert sorted(r["candidate_id"] for r in rows) == [f"c{k:03d}-{i}" for k in range(12) for i in range(3)]


@pytest.mark.parametrize("reads", [0, 5])
def test_released_planner_writes_the_rest_at_once(ray_session, reads: int):
    ahead = ReadAhead(100, 1)
    if reads:
        ahead.reads.reading(reads)  # type: ignore[union-attr]
        ahead.wait_to_write(reads + 1)
    ahead.release()
    assert len(list(ahead.paced(iter([pa.table({"x": [k]}) for k in range(100)])))) == 100


def test_plan_files_are_read_in_runs_that_cover_them_in_order(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(datasource, "PLAN_SINGLE_FILE_READS", 3)
    monkeypatch.setattr(datasource, "PLAN_READ_TASKS", 6)
    for n in (0, 1, 3, 4, 12, 100):
        runs = plan_file_runs(n)
        assert [k for a, b in runs for k in range(a, b)] == list(range(n))  # every file once, in order
        assert runs[:3] == [(k, k + 1) for k in range(min(n, 3))]  # the first files alone
        assert len(runs) <= 6
    assert plan_file_runs(12) == [(0, 1), (1, 2), (2, 3), (3, 6), (6, 9), (9, 12)]


def test_runs_longer_than_the_write_ahead_window_are_read_whole(tmp_path: Path, ray_session,
                                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(datasource, "PLAN_SINGLE_FILE_READS", 1)
    monkeypatch.setattr(datasource, "PLAN_READ_TASKS", 3)  # runs (0, 1), (1, 7), (7, 13): longer than ahead = 2
    run = Location(str(tmp_path / "run"))
    urls, failure = plan_file_urls(run, 0, 13), failure_url(run, 0)
    ahead = ReadAhead(len(urls), 2)
    chunks = (pa.table({"candidate_id": [f"c{k:03d}-{i}" for i in range(3)]}) for k in range(13))
    writer = threading.Thread(target=write_plan_files,
                              args=(ahead.paced(chunks), pa.array([], pa.string()), urls, run))
    writer.start()
    rows = dataset_from_plan_files(urls, failure, run, None, ahead.reads).take_all()
    writer.join(timeout=60)
    assert not writer.is_alive()
    assert sorted(r["candidate_id"] for r in rows) == [f"c{k:03d}-{i}" for k in range(13) for i in range(3)]
