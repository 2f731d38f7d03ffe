"""Which work items are done: the one place that answers it, read from the committed manifests.

An ingest item (input_key) is done when it has a `sources` row or an ingest `rejects` row; a candidate is done
when it has a `qc` row for its round. Rows held back by the commit stage (stage_error, pipeline/commit_stage.py)
are committed only when the run is not aborting, so an item a broken model failed on is never done.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from manifests.store import ManifestStore


def _unique(values: list[pa.ChunkedArray]) -> pa.Array:
    arrays = [c for v in values for c in v.chunks]
    if not arrays:
        return pa.array([], pa.string())
    return pc.unique(pa.concat_arrays([a.cast(pa.string()) for a in arrays]))


def ingested_keys(store: ManifestStore) -> pa.Array:
    """input_keys ingest has decided (a source or an ingest reject)."""
    sources = store.read_table("sources", ["input_key"])
    rejects = store.read_table("rejects", ["item_id", "stage"])
    return _unique([sources["input_key"], pc.filter(rejects["item_id"], pc.equal(rejects["stage"], "ingest"))])


def decided_candidates(store: ManifestStore, round_index: int) -> pa.Array:
    """candidate_ids of `round_index` that have a QC decision."""
    qc = store.read_table("qc", ["candidate_id", "round"])
    return _unique([pc.filter(qc["candidate_id"], pc.equal(qc["round"], round_index))])


def not_done(table: pa.Table, id_column: str, done: pa.Array) -> pa.Table:
    """The rows of `table` whose id is not in `done`."""
    if len(done) == 0:
        return table
    return table.filter(pc.invert(pc.is_in(table[id_column], value_set=done)))
