"""Worker-side manifest commits: the last Ray Data stage of a phase commits each batch it gets as one shard
(files, then commit marker: manifests/store.py) and returns one small stats row; result rows never reach the driver.

A shard's name is a hash of the ids it holds (`shard_key`), so a retried task rewrites the same shard: exactly
once. A rerun's retry of an item (attempt 2, 3, ...) is another shard (`batch_shard_ids`): it never rewrites the
shard that recorded the failed attempt. Rows that failed with `stage_error` (or `worker_crashed`,
pipeline/isolate.py) for good are not committed here: they go back to the driver in the stats row (`held`, Arrow
IPC), which commits them only while the stage-error abort guard is satisfied (pipeline/commit.py), so a broken
model never leaves its items marked done. Rows that failed transiently before their last attempt are not
decisions: the split (pipeline/retry.py `retrying_split`) commits them here as `attempts` rows, and they never
reach the guard. Nothing here imports Ray: pipeline/ray_adapter.py maps it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from core.faults import FaultInjectionConfig, maybe_inject
from core.location import Location
from manifests.store import ManifestStore, shard_key
from pipeline.retry import batch_shard_ids, retry_mask

TableSplitter = Callable[[pa.Table], dict[str, pa.Table]]

# An item whose worker died every time it ran alone (pipeline/isolate.py): decided like a stage error.
WORKER_CRASHED = "worker_crashed"
# Reject reasons the driver judges (abort guard) before they are committed: a model failing, a worker dying.
HELD_REASONS = ("stage_error", WORKER_CRASHED)

# One row per committed batch: what the driver needs for progress and the abort guard.
COMMIT_STATS = pa.schema([
    pa.field("rows", pa.int64()),  # rows in the batch (committed + held)
    pa.field("shard", pa.string()),  # the shard committed, null when every row was held
    pa.field("outcomes", pa.string()),  # JSON {outcome: count}
    pa.field("stage_errors", pa.int64()),
    pa.field("first_error", pa.string()),
    pa.field("held", pa.binary()),  # stage_error rows as an Arrow IPC stream, null when none
])


@dataclass(frozen=True)
class CommitSpec:
    """Everything a commit worker needs: small values only (no tables), so it travels inline with the task."""

    run: Location  # the run folder, with the options that reach it
    split: TableSplitter
    id_column: str
    prefix: str
    outcome_column: str
    info: dict = field(default_factory=dict)
    fault: FaultInjectionConfig | None = None  # testing hook: pause/raise/exit between files and marker
    max_attempts: int | None = None  # transient failures before this attempt are committed (as retries), not held


_stores: dict[str, ManifestStore] = {}


def _store(spec: CommitSpec) -> ManifestStore:
    """One ManifestStore per worker process and run (fsspec filesystems are cached by fsspec too)."""
    key = json.dumps([spec.run.url, spec.run.storage_options], sort_keys=True, default=str)
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = ManifestStore.open(spec.run)
    fault = spec.fault
    store.before_marker = (lambda shard: maybe_inject(fault, "commit", shard)) if fault is not None else None
    return store


def stage_error_mask(batch: pa.Table) -> pa.ChunkedArray:
    """Rows rejected for a HELD_REASONS reason."""
    if "reject_reason" not in batch.column_names:
        return pa.chunked_array([pa.array([False] * batch.num_rows)])
    return pc.fill_null(pc.is_in(batch["reject_reason"], value_set=pa.array(HELD_REASONS)), False)


def table_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def held_mask(batch: pa.Table, max_attempts: int | None) -> pa.ChunkedArray:
    """The rows the driver must judge: stage errors, except transient ones that will be retried."""
    errors = stage_error_mask(batch)
    if max_attempts is None:
        return errors
    return pc.and_(errors, pc.invert(retry_mask(batch, max_attempts)))


def commit_batch(batch: pa.Table, spec: CommitSpec) -> pa.Table:
    """Commit the batch's non-held rows as one shard; return its stats row (COMMIT_STATS)."""
    errors = held_mask(batch, spec.max_attempts)
    held = batch.filter(errors)
    ok = batch.filter(pc.invert(errors))
    shard = None
    if ok.num_rows:
        shard = shard_key(batch_shard_ids(ok, spec.id_column), spec.prefix)
        _store(spec).commit(shard, spec.split(ok), spec.info)
    outcomes = Counter(r or "ok" for r in batch.column(spec.outcome_column).to_pylist())
    first_error = held.column("reject_detail")[0].as_py() if held.num_rows else None
    return pa.Table.from_pylist([dict(
        rows=batch.num_rows, shard=shard, outcomes=json.dumps(outcomes, sort_keys=True),
        stage_errors=held.num_rows, first_error=first_error,
        held=table_to_ipc(held) if held.num_rows else None)], schema=COMMIT_STATS)
