"""Issue 21: the features table lives in blocks of source rows (pipeline/planning/ray_features.py FeatureBlocks), so
no reader needs it whole: the plan rows gathered from just the blocks a plan file's rows are in are the rows
gathered from the whole table, the embedding column of all blocks is the sources' column, and the duplicate check's
resemblance from just the rows it names is the whole column's."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from benchmarks.bench_planner import synthetic_sources
from manifests.schemas import PLAN_FEATURE_COLUMNS, PLAN_INDEX_SCHEMA, PLAN_ROLE_ROWS
from manifests.store import ManifestStore
from pipeline.planning import ray_features, ray_planner
from pipeline.planning.features import resemblance
from pipeline.planning.gather import gather_from_blocks, gather_plan
from pipeline.planning.inputs import PLANNER_COLUMNS, PlanInputs


def test_plan_rows_from_feature_blocks_equal_the_whole_table(ray_session, tmp_path, monkeypatch):
    store = ManifestStore.open(str(tmp_path / "run"))
    for k, n in enumerate([30, 0, 45, 20, 33]):  # files of several sizes, one empty
        store.commit(f"ingest-{k}", {"sources": synthetic_sources(n, 5, seed=k)})
    monkeypatch.setattr(ray_features, "FEATURE_BLOCK_ROWS", 40)  # blocks of whole files: 30+0+45, 20+33
    blocks = ray_features.plan_features(store).blocks
    assert blocks.starts.tolist() == [0, 75, 128] and len(blocks.rest) == len(blocks.embeddings) == 2
    whole = store.read_table("sources", PLAN_FEATURE_COLUMNS)
    assert blocks.embedding_rows(np.arange(128)).to_pylist() == whole["embedding"].to_pylist()
    rng = np.random.default_rng(0)
    for rows_max in (60, 128):  # rows of the first block only, then of both
        n = 7
        picks = {role: rng.integers(0, rows_max, n) for role in PLAN_ROLE_ROWS}
        index = pa.table({"candidate_id": [f"c{i}" for i in range(n)], "round": [0] * n, "seed": list(range(n)),
                          "identity_i": ["a"] * n, "identity_j": ["b"] * n,
                          **{PLAN_ROLE_ROWS[r]: picks[r] for r in PLAN_ROLE_ROWS}})
        index = index.select(PLAN_INDEX_SCHEMA.names).cast(PLAN_INDEX_SCHEMA)
        table, local = blocks.rows(np.concatenate([picks[r] for r in PLAN_ROLE_ROWS]).astype(np.int64))
        roles = len(PLAN_ROLE_ROWS)
        assert table.num_rows == roles * n and sorted(local.tolist()) == list(range(roles * n))  # just the rows named
        assert gather_from_blocks(index, blocks).equals(gather_plan(index, whole))
    rows = rng.permutation(128)[:50]  # any rows, any order: the embeddings of just those rows, in that order
    assert blocks.embedding_rows(rows).to_pylist() == whole["embedding"].take(pa.array(rows)).to_pylist()
    # the duplicate check's resemblance from just the rows its queries name, over both blocks: the whole column's
    queries = [(5, [100, 7]), (90, [3]), (127, []), (40, [41, 120, 0])]
    assert ray_features.block_resemblance(blocks, queries) == resemblance(whole["embedding"], queries)


def test_inputs_read_in_parts_equal_the_inputs_read_whole(ray_session, tmp_path, monkeypatch):
    store = ManifestStore.open(str(tmp_path / "run"))
    for k, n in enumerate([30, 0, 45, 20, 33]):
        store.commit(f"ingest-{k}", {"sources": synthetic_sources(n, 5, seed=k)})
    monkeypatch.setattr(ray_planner, "INPUT_PART_ROWS", 40)  # parts 30+0+45, 20+33: labels first seen in other orders
    remote = ray_planner.RemotePlanInputs(store)
    parts, whole = ray.get(remote.ref), PlanInputs.from_batches([store.read_table("sources", PLANNER_COLUMNS)])
    for name in ("key_rank", "identity_code", "label", "sha", "desc"):
        assert np.array_equal(getattr(parts, name), getattr(whole, name)), name
    assert parts.keys.equals(whole.keys) and parts.paths.equals(whole.paths)
    assert (parts.identity_names, parts.label_codes) == (whole.identity_names, whole.label_codes)
    assert remote.summary.rows == 128
    assert remote.summary.identity_counts.tolist() == np.bincount(whole.identity_code).tolist()
    # the feature blocks read after the inputs, the other columns a block or two at a time: the same table
    blocks, table = remote.features.blocks, store.read_table("sources", PLAN_FEATURE_COLUMNS)
    assert blocks.embedding_rows(np.arange(128)).to_pylist() == table["embedding"].to_pylist()
    rest = pa.concat_tables(ray.get(blocks.rest))
    assert rest.equals(table.select(ray_features.REST_COLUMNS).combine_chunks())


def _embedding_column(emb: np.ndarray) -> pa.ChunkedArray:
    flat = pa.array(emb.astype(np.float32).reshape(-1))
    offsets = pa.array(np.arange(0, emb.size + 1, emb.shape[1], dtype=np.int32))
    return pa.chunked_array([pa.ListArray.from_arrays(offsets, flat)])


def test_centroids_block_by_block_equal_the_whole_column_centroids(ray_session, monkeypatch):
    """Centroids from one task per embedding block (ray_centroids.py), identities inside one block and identities
    split over several alike, are the whole column's bit for bit: the same clusters and max_similarity."""
    from pipeline.planning import clusters as ic
    from pipeline.planning import ray_centroids

    rng = np.random.default_rng(3)
    n_ids = 120
    base = rng.standard_normal((n_ids, 16))
    base[1::4] = base[0::4][: len(base[1::4])] + 0.05 * rng.standard_normal((len(base[1::4]), 16))  # twins
    ident = np.repeat(np.arange(n_ids), rng.integers(1, 6, n_ids))
    half = len(ident) // 2  # the first half's identities keep their rows together, the second half's are scattered
    ident = np.concatenate([ident[:half], rng.permutation(ident[half:])])
    col = _embedding_column(base[ident] + 0.1 * rng.standard_normal((len(ident), 16)))
    order = np.argsort(ident, kind="stable")
    codes, starts = np.unique(ident[order], return_index=True)
    starts = np.append(starts, len(order))
    names = [f"id{c:04d}" for c in codes]
    block_starts = np.append(np.arange(0, len(ident), 37), len(ident))
    blocks = [ray_session.put(pa.table({"embedding": col.slice(a, b - a)}))
              for a, b in zip(block_starts[:-1], block_starts[1:], strict=True)]
    monkeypatch.setattr(ray_centroids, "CENTROID_TASKS_IN_FLIGHT", 2)
    cent = ray_centroids.block_centroids(blocks, block_starts, order, starts)
    whole = ic.identity_centroids(col, order, starts, np.arange(len(names)))
    assert cent is not None and cent.shape == whole.shape and np.array_equal(cent, whole)  # bit for bit
    block_of = np.searchsorted(block_starts, order, side="right") - 1
    spans = np.maximum.reduceat(block_of, starts[:-1]) - np.minimum.reduceat(block_of, starts[:-1])
    assert (spans > 0).sum() >= 20 and (spans == 0).sum() >= 20  # both kinds of identity occur
    expected = ic.cluster_embedding_rows(names, order, starts, col, 0.9)
    assert ic.cluster_centroids(names, cent, 0.9) == expected
    assert sum(size > 1 for size in expected.size_of.values()) >= 10
    no_values = pa.ListArray.from_arrays(pa.array([0, 0, 0, 0, 0], pa.int32()), pa.array([], pa.float32()))
    empty = [ray_session.put(pa.table({"embedding": pa.chunked_array([no_values])}))]
    assert ray_centroids.block_centroids(empty, np.array([0, 4]), np.arange(4), np.array([0, 2, 4])) is None
