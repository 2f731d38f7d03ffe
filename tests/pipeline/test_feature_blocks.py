"""Issue 21: the features table lives in blocks of source rows (pipeline/planning/ray_features.py FeatureBlocks), so
no reader needs it whole: the plan rows gathered from just the blocks a plan file's rows are in are the rows
gathered from the whole table, and the embedding column of all blocks is the sources' column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from benchmarks.bench_planner import synthetic_sources
from manifests.schemas import PLAN_FEATURE_COLUMNS, PLAN_INDEX_SCHEMA, PLAN_ROLE_ROWS
from manifests.store import ManifestStore
from pipeline.planning import ray_features
from pipeline.planning.gather import gather_from_blocks, gather_plan


def test_plan_rows_from_feature_blocks_equal_the_whole_table(ray_session, tmp_path, monkeypatch):
    store = ManifestStore.open(str(tmp_path / "run"))
    for k, n in enumerate([30, 0, 45, 20, 33]):  # files of several sizes, one empty
        store.commit(f"ingest-{k}", {"sources": synthetic_sources(n, 5, seed=k)})
    monkeypatch.setattr(ray_features, "FEATURE_BLOCK_ROWS", 40)  # blocks of whole files: 30+0+45, 20+33
    blocks = ray_features.plan_features(store).blocks
    assert blocks.starts.tolist() == [0, 75, 128] and len(blocks.rest) == len(blocks.embeddings) == 2
    whole = store.read_table("sources", PLAN_FEATURE_COLUMNS)
    assert blocks.embedding_column().to_pylist() == whole["embedding"].to_pylist()
    rng = np.random.default_rng(0)
    for rows_max in (60, 128):  # rows of the first block only, then of both
        n = 7
        picks = {role: rng.integers(0, rows_max, n) for role in PLAN_ROLE_ROWS}
        index = pa.table({"candidate_id": [f"c{i}" for i in range(n)], "round": [0] * n, "seed": list(range(n)),
                          "identity_i": ["a"] * n, "identity_j": ["b"] * n,
                          **{PLAN_ROLE_ROWS[r]: picks[r] for r in PLAN_ROLE_ROWS}})
        index = index.select(PLAN_INDEX_SCHEMA.names).cast(PLAN_INDEX_SCHEMA)
        table, local = blocks.rows(np.concatenate([picks[r] for r in PLAN_ROLE_ROWS]).astype(np.int64))
        assert table.num_rows == 4 * n and sorted(local.tolist()) == list(range(4 * n))  # just the rows named
        assert gather_from_blocks(index, blocks).equals(gather_plan(index, whole))
