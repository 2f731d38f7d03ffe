"""Full plan rows: gather_plan turns the planner's PLAN_INDEX_SCHEMA rows into PLAN_SCHEMA rows from the sources'
feature columns, and read_plan_rows is the one way plan rows are read back from the plan files (by the plan read
tasks of the stream, and by crash isolation for the items of a dead actor's batch)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from core.location import Location
from manifests.schemas import PLAN_INDEX_SCHEMA, PLAN_ROLE_ROWS, PLAN_SCHEMA
from pipeline.planning.files import read_plan_file
from pipeline.planning.ray_features import FeatureBlocks, Features


def gather_plan(index: pa.Table, features: pa.Table) -> pa.Table:
    """PLAN_SCHEMA rows of PLAN_INDEX_SCHEMA rows: each image's columns taken from `features`
    (PLAN_FEATURE_COLUMNS of the sources, in the order the planner read them) by row. Columns after the index ones
    (attempt) follow."""
    n = index.num_rows

    def gather(col: str, role: str) -> pa.ChunkedArray:
        return features.column(col).take(index.column(PLAN_ROLE_ROWS[role]))

    cols: dict[str, object] = dict(
        candidate_id=index["candidate_id"], round=index["round"], seed=index["seed"],
        identity_i=index["identity_i"], identity_j=index["identity_j"], expression=gather("expression", "t"),
        target_source_id=gather("source_id", "t"), s_source_id=gather("source_id", "s"),
        carrier_source_id=gather("source_id", "carrier"), swap_source_id=gather("source_id", "swap"),
        t_aligned_path=gather("aligned_path", "t"), t_aligned_sha256=gather("aligned_sha256", "t"),
        s_aligned_path=gather("aligned_path", "s"), s_aligned_sha256=gather("aligned_sha256", "s"),
        carrier_aligned_path=gather("aligned_path", "carrier"), swap_aligned_path=gather("aligned_path", "swap"),
        t_landmarks68=gather("landmarks68", "t"), s_landmarks68=gather("landmarks68", "s"),
        carrier_landmarks68=gather("landmarks68", "carrier"), swap_landmarks68=gather("landmarks68", "swap"),
        t_embedding=gather("embedding", "t"), s_embedding=gather("embedding", "s"),
        j_embedding=gather("embedding", "swap"), t_descriptor=gather("expression_descriptor", "t"),
        mouth_source_id=gather("source_id", "mouth"), mouth_aligned_path=gather("aligned_path", "mouth"),
        mouth_landmarks68=gather("landmarks68", "mouth"),
        status=["ok"] * n, reject_stage=[None] * n, reject_reason=[None] * n, reject_detail=[None] * n)
    arrays = []
    for f in PLAN_SCHEMA:
        v = cols[f.name]
        arrays.append(v.cast(f.type) if isinstance(v, pa.ChunkedArray | pa.Array) else pa.array(v, f.type))
    table = pa.Table.from_arrays(arrays, schema=PLAN_SCHEMA)
    for name in index.column_names:
        if name not in PLAN_INDEX_SCHEMA.names:
            table = table.append_column(index.schema.field(name), index[name])
    return table


def read_plan_rows(urls: list[str], run: Location, failure: str, features: Features | None,
                   ids: list[str] | None = None) -> pa.Table:
    """The rows of these plan files (each waited for until the planner has written it), only those of candidate
    `ids` when given: PLAN_SCHEMA rows (+ attempt) gathered from the `features` table when given, else the rows as
    written."""
    tables: Iterator[pa.Table] = (read_plan_file(url, run, failure) for url in urls)
    if ids is not None:  # filtered file by file: only the wanted rows are held
        wanted = pa.array(ids, pa.string())
        tables = (t.filter(pc.is_in(t["candidate_id"], value_set=wanted)) for t in tables)
    plan = pa.concat_tables(list(tables))
    if features is None:
        return plan
    # a remote task given the reference as a top-level argument (crash isolation's plan_rows_of) gets the blocks
    # themselves, already resolved by Ray; the dataset's read tasks get the reference
    return gather_from_blocks(plan, features if isinstance(features, FeatureBlocks) else ray.get(features))


def gather_from_blocks(index: pa.Table, features: FeatureBlocks) -> pa.Table:
    """gather_plan from only the feature blocks that the index's rows are in (the rows re-indexed into them): the
    same PLAN_SCHEMA rows as from the whole features table."""
    roles = list(PLAN_ROLE_ROWS.values())
    n = index.num_rows
    table, local = features.rows(np.concatenate([index[c].to_numpy() for c in roles]).astype(np.int64))
    for k, col in enumerate(roles):
        field = index.schema.field(col)
        index = index.set_column(index.schema.get_field_index(col), field,
                                 pa.array(local[k * n:(k + 1) * n], field.type))
    return gather_plan(index, table)
