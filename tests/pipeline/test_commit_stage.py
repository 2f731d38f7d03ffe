"""The worker-side commit stage and the streamed plan files, without Ray: shards, held stage errors, exactly-once
on a retried batch, and a plan file read before it is written."""

from __future__ import annotations

import json
import threading
from functools import partial
from pathlib import Path

import pyarrow as pa
import pytest

from core.location import Location
from manifests.store import ManifestStore
from pipeline.commit_stage import CommitSpec, commit_batch, table_from_ipc
from pipeline.done import ingested_keys
from pipeline.ingest_phase import ingest_split
from pipeline.planning.files import failure_url, plan_file_urls, read_plan_file, write_plan_files
from tests.waiting import locals_in, wait_until


def _ingest_rows(keys: list[str], reasons: list[str | None]) -> pa.Table:
    from manifests.schemas import SOURCES
    n = len(keys)
    cols = {f.name: pa.nulls(n, f.type) for f in SOURCES}
    cols.update(input_key=pa.array(keys), source_id=pa.array([f"s{k}" for k in keys]),
                identity=pa.array(["id"] * n), path=pa.array([f"/c/{k}" for k in keys]),
                file_sha256=pa.array(["0" * 64] * n), aligned_path=pa.array(["/a"] * n),
                aligned_sha256=pa.array(["0" * 64] * n))
    status = ["ok" if r is None else "rejected" for r in reasons]
    cols.update(status=pa.array(status), reject_stage=pa.array([None if r is None else "ingest" for r in reasons],
                                                               pa.string()),
                reject_reason=pa.array(reasons, pa.string()),
                reject_detail=pa.array([None if r is None else f"{r} detail" for r in reasons], pa.string()))
    return pa.table(cols)


def _spec(run: Path) -> CommitSpec:
    return CommitSpec(Location(str(run)), partial(ingest_split, run_id="r"), "input_key", "ingest-", "reject_reason",
                      {"phase": "ingest"})


def test_commit_batch_commits_one_shard_and_holds_stage_errors(tmp_path):
    run = tmp_path / "run"
    batch = _ingest_rows(["a", "b", "c", "d"], [None, "no_face", "stage_error", None])
    stats = commit_batch(batch, _spec(run)).to_pylist()[0]
    assert stats["rows"] == 4 and stats["stage_errors"] == 1 and stats["first_error"] == "stage_error detail"
    assert json.loads(stats["outcomes"]) == {"ok": 2, "no_face": 1, "stage_error": 1}
    held = table_from_ipc(stats["held"])
    assert held.column("input_key").to_pylist() == ["c"]
    store = ManifestStore.open(str(run))
    assert [m["shard"] for m in store.markers()] == [stats["shard"]]
    assert sorted(ingested_keys(store).to_pylist()) == ["a", "b", "d"]  # the stage_error item is not done
    # a retried task (same batch) rewrites the same shard: still one marker, every row once
    again = commit_batch(batch, _spec(run)).to_pylist()[0]
    assert again["shard"] == stats["shard"] and len(store.markers()) == 1
    assert store.read_table("sources").num_rows == 2 and store.read_table("rejects").num_rows == 1


def test_a_reruns_retry_of_the_same_batch_keeps_the_failed_attempts_record(tmp_path):
    """Every item of a batch failed transiently on attempt 1 (attempts rows); the rerun retries exactly those
    items in one batch on attempt 2: its shard is another one, so the record of attempt 1 survives."""
    from pipeline.ingest_phase import INGEST_ITEMS
    from pipeline.retry import retrying_split, with_attempt_column
    from stages.base import TRANSIENT_COLUMN

    run = tmp_path / "run"
    split = retrying_split(partial(ingest_split, run_id="r"), INGEST_ITEMS, "r", 3)
    spec = CommitSpec(Location(str(run)), split, "input_key", "ingest-", "reject_reason", {"phase": "ingest"},
                      max_attempts=3)
    def on_attempt(rows: pa.Table, attempt: int) -> pa.Table:
        return with_attempt_column(rows, pa.array([attempt] * rows.num_rows, pa.int32()))

    failed = on_attempt(_ingest_rows(["a", "b"], ["stage_error", "stage_error"]), 1)
    first = commit_batch(failed.append_column(TRANSIENT_COLUMN, pa.array([True, True])), spec).to_pylist()[0]
    retried = on_attempt(_ingest_rows(["a", "b"], [None, None]), 2)
    second = commit_batch(retried, spec).to_pylist()[0]
    assert first["shard"] and second["shard"] and first["shard"] != second["shard"]
    store = ManifestStore.open(str(run))
    assert sorted(store.read_table("attempts").column("item_id").to_pylist()) == ["a", "b"]
    assert store.read_table("sources").column("attempt").to_pylist() == [2, 2]
    # a retried Ray task of the rerun's batch still rewrites its own shard: exactly once
    assert commit_batch(retried, spec).to_pylist()[0]["shard"] == second["shard"] and len(store.markers()) == 2


def test_batch_of_only_stage_errors_commits_nothing(tmp_path):
    run = tmp_path / "run"
    stats = commit_batch(_ingest_rows(["x", "y"], ["stage_error", "stage_error"]), _spec(run)).to_pylist()[0]
    assert stats["shard"] is None and stats["stage_errors"] == 2
    assert ManifestStore.open(str(run)).markers() == []


def test_plan_file_is_read_once_the_driver_writes_it(tmp_path):
    run = Location(str(tmp_path / "run"))
    urls = plan_file_urls(run, 0, 2)
    chunks = [pa.table({"candidate_id": ["c1", "c2"]}), pa.table({"candidate_id": ["c3"]})]
    got: list[pa.Table] = []
    reader = threading.Thread(target=lambda: got.append(read_plan_file(urls[1], run, failure_url(run, 0), 30)))
    reader.start()

    def looked_and_waits() -> bool:  # it found no file, slept, and is looking again (its back-off has grown)
        seen = locals_in(reader, "read_plan_file")
        return not reader.is_alive() or (seen is not None and seen["delay"] > 0.05)
    wait_until(looked_and_waits, "the reader to look for the plan file and wait")
    assert reader.is_alive() and not got  # waiting for the file
    planned, todo = write_plan_files(chunks, pa.array(["c2"]), urls, run)
    reader.join(10)
    assert (planned, todo) == (3, 2)
    assert got[0].column("candidate_id").to_pylist() == ["c3"]
    assert read_plan_file(urls[0], run, failure_url(run, 0)).column("candidate_id").to_pylist() == ["c1"]


def test_plan_reader_stops_when_planning_failed(tmp_path):
    run = Location(str(tmp_path / "run"))
    (url,) = plan_file_urls(run, 0, 1)
    Path(failure_url(run, 0)).parent.mkdir(parents=True, exist_ok=True)
    Path(failure_url(run, 0)).write_text("boom")
    with pytest.raises(RuntimeError, match="planning failed"):
        read_plan_file(url, run, failure_url(run, 0), 5)


def test_plan_files_past_the_plan_are_written_empty(tmp_path):
    run = Location(str(tmp_path / "run"))
    urls = plan_file_urls(run, 0, 3)  # named for an upper bound of the plan: 3 files, 2 chunks
    empty = pa.table({"candidate_id": pa.array([], pa.string())})
    planned, todo = write_plan_files([pa.table({"candidate_id": ["c1"]}), pa.table({"candidate_id": ["c2"]})],
                                     pa.array([], pa.string()), urls, run, empty=empty)
    assert (planned, todo) == (2, 2)
    assert read_plan_file(urls[2], run, failure_url(run, 0)).num_rows == 0
    with pytest.raises(RuntimeError, match="1 chunks for 2 plan files"):  # without `empty`: one chunk per file
        write_plan_files([pa.table({"candidate_id": ["c1"]})], pa.array([], pa.string()), urls[:2], run)
