"""What is done and what to retry: transient stage errors (stages/errors.py) are attempts, not decisions.

A row that failed with a transient error on attempt a < run.max_attempts goes to the `attempts` table only, so
its item stays undecided and the next rerun processes it again as attempt a + 1. The last attempt's failure is
a decision: a `stage_error` reject with `transient = true` and `attempt = max_attempts`. Every decided row
records the attempt that made it.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from manifests.store import ManifestStore
from manifests.tables import ItemColumns, attempts_table
from stages.base import TRANSIENT_COLUMN

ATTEMPT_COLUMN = "attempt"
ID_OF_TABLE = {"sources": "input_key", "rejects": "item_id", "candidates": "candidate_id", "qc": "candidate_id"}


def failed_attempts(store: ManifestStore, round_index: int, stages: tuple[str, ...]) -> dict[str, int]:
    """The highest failed attempt recorded for each id (in this round, at these stages)."""
    past = store.read_table("attempts", ["item_id", "round", "stage", "attempt"])
    mask = pc.and_(pc.equal(past["round"], round_index), pc.is_in(past["stage"], pa.array(stages, pa.string())))
    past = past.filter(mask)
    last: dict[str, int] = {}
    for item, a in zip(past["item_id"].to_pylist(), past["attempt"].to_pylist(), strict=True):
        last[item] = max(last.get(item, 0), a)
    return last


def attempts_for(ids: pa.Array | pa.ChunkedArray, failed: dict[str, int]) -> pa.Array:
    """1 + the highest failed attempt of each id, as int32."""
    return pa.array([failed.get(i, 0) + 1 for i in ids.to_pylist()], pa.int32())


def next_attempts(store: ManifestStore, ids: pa.Array | pa.ChunkedArray, round_index: int,
                  stages: tuple[str, ...]) -> pa.Array:
    """1 + the highest failed attempt recorded for each id (in this round, at these stages), as int32."""
    return attempts_for(ids, failed_attempts(store, round_index, stages))


def with_attempt_column(table: pa.Table, attempts: pa.Array) -> pa.Table:
    """The work items with their attempt number (read by the stages' fault hook, copied into every row)."""
    if ATTEMPT_COLUMN in table.column_names:
        table = table.drop_columns([ATTEMPT_COLUMN])
    return table.append_column(ATTEMPT_COLUMN, attempts)


def batch_shard_ids(batch: pa.Table, id_column: str) -> list[str]:
    """The ids that name a batch's shard: an item on attempt a > 1 counts as `id@a`, so a rerun's retry never
    rewrites the shard that recorded the failed attempt; first attempts count as the bare id."""
    ids = batch.column(id_column).to_pylist()
    if ATTEMPT_COLUMN not in batch.column_names:
        return ids
    attempts = batch.column(ATTEMPT_COLUMN).to_pylist()
    return [i if (a or 1) <= 1 else f"{i}@{a}" for i, a in zip(ids, attempts, strict=True)]


def retry_mask(t: pa.Table, max_attempts: int) -> pa.ChunkedArray:
    """Rows that failed transiently before their last attempt: `attempts` rows, not decisions."""
    if TRANSIENT_COLUMN not in t.column_names or ATTEMPT_COLUMN not in t.column_names:
        return pc.equal(pa.chunked_array([pa.array([False] * t.num_rows)]), True)
    transient = pc.fill_null(t[TRANSIENT_COLUMN], False)
    mask = pc.and_(pc.and_(pc.equal(t["status"], "rejected"), transient), pc.less(t[ATTEMPT_COLUMN], max_attempts))
    return pc.fill_null(mask, False)  # a null status or attempt never makes a row retryable (nor drops it)


def retrying_split(split: Callable[[pa.Table], dict[str, pa.Table]], items: ItemColumns, run_id: str,
                   max_attempts: int) -> Callable[[pa.Table], dict[str, pa.Table]]:
    """Wrap a phase's splitter: retryable rows become `attempts` rows; decided rows get attempt / transient."""
    def wrapped(t: pa.Table) -> dict[str, pa.Table]:
        mask = retry_mask(t, max_attempts)
        retry, final = t.filter(mask), t.filter(pc.invert(mask))
        out = split(final)
        if ATTEMPT_COLUMN in final.column_names:
            attempt_of = dict(zip(final[items.id].to_pylist(), final[ATTEMPT_COLUMN].to_pylist(), strict=True))
            transient_of = dict(zip(final[items.id].to_pylist(), final[TRANSIENT_COLUMN].to_pylist(), strict=True)) \
                if TRANSIENT_COLUMN in final.column_names else {}
            for name, table in list(out.items()):
                key = ID_OF_TABLE.get(name)
                if key is None or key not in table.column_names:
                    continue
                ids = table[key].to_pylist()
                if ATTEMPT_COLUMN not in table.column_names:
                    table = table.append_column(ATTEMPT_COLUMN, pa.array([attempt_of.get(i) for i in ids], pa.int32()))
                if name == "rejects" and "transient" not in table.column_names:
                    table = table.append_column("transient", pa.array(
                        [bool(transient_of.get(i)) for i in ids], pa.bool_()))
                out[name] = table
        out["attempts"] = attempts_table(retry, items, run_id)
        return out
    return wrapped


def pending_retries(store: ManifestStore) -> dict[str, int]:
    """Items whose last attempt failed transiently and that no decision covers yet: {phase: count}."""
    att = store.read_table("attempts", ["item_id", "round", "stage"])
    if att.num_rows == 0:
        return {}
    decided = store.read_column_set("sources", "input_key") | store.read_column_set("rejects", "item_id") \
        | store.read_column_set("qc", "candidate_id")
    out: dict[str, set[str]] = {}
    cols = (att["item_id"].to_pylist(), att["round"].to_pylist(), att["stage"].to_pylist())
    for item, r, stage in zip(*cols, strict=True):
        if item not in decided:
            out.setdefault("ingest" if stage == "ingest" else f"round {r}", set()).add(item)
    return {k: len(v) for k, v in sorted(out.items())}
