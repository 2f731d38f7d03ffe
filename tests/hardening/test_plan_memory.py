"""Issue 12, 1M-candidate dry run: the planner's bounded-memory pieces give what the whole-matrix code gave.

Identity centroids are computed a block of same-size identities at a time (bit for bit the per-identity mean), and
above EXACT_MATRIX_IDENTITIES the similar pairs are searched shard by shard on faiss (float32 candidates, float64
decision: tests/hardening/test_pair_search.py has the IVF index)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.planning import clusters as ic
from pipeline.planning import pair_search


def _column(emb: np.ndarray) -> pa.ChunkedArray:
    flat = pa.array(emb.astype(np.float32).reshape(-1))
    offsets = pa.array(np.arange(0, emb.size + 1, emb.shape[1], dtype=np.int32))
    return pa.chunked_array([pa.ListArray.from_arrays(offsets, flat)])


def _planted(n_ids: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of identities of 1-6 images; every third identity has a near twin (another name, same person)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_ids, 128))
    base[1::3] = base[0::3][: len(base[1::3])] + 0.05 * rng.standard_normal((len(base[1::3]), 128))
    ident = np.repeat(np.arange(n_ids), rng.integers(1, 7, n_ids))
    emb = base[ident] + 0.1 * rng.standard_normal((len(ident), 128))
    perm = rng.permutation(len(ident))  # rows of an identity scattered over the table
    return emb[perm], ident[perm]


def test_centroids_by_block_equal_the_per_identity_mean():
    emb, ident = _planted(400, 0)
    order = np.argsort(ident, kind="stable")
    codes, starts = np.unique(ident[order], return_index=True)
    starts = np.append(starts, len(order))
    names = [f"id{c:04d}" for c in codes]
    col = _column(emb)
    full = ic.embedding_matrix(col)
    full = full / np.maximum(np.linalg.norm(full, axis=1, keepdims=True), 1e-12)
    members = {n: order[starts[k]:starts[k + 1]].tolist() for k, n in enumerate(names)}
    for threshold in (0.96, 0.5, None):
        blocked = ic.cluster_embedding_rows(names, order, starts, col, threshold)
        assert blocked == ic.cluster_identities(members, full, threshold)
    assert sum(size > 1 for size in blocked.size_of.values()) == 0  # threshold None
    assert sum(size > 1 for size in ic.cluster_embedding_rows(names, order, starts, col, 0.96).size_of.values())


def test_block_pair_search_finds_the_same_clusters(monkeypatch):
    emb, ident = _planted(300, 1)
    cent = np.stack([emb[ident == k].mean(axis=0) for k in range(300) if (ident == k).any()])
    names = [f"id{k:04d}" for k in range(len(cent))]
    exact = ic.cluster_centroids(names, cent, 0.96)
    monkeypatch.setattr(ic, "EXACT_MATRIX_IDENTITIES", 10)
    monkeypatch.setattr(pair_search, "SHARD_ROWS", 7)  # shards of queries, the pairs a < b across them
    blocked = ic.cluster_centroids(names, cent, 0.96)
    assert blocked.cluster_of == exact.cluster_of and blocked.size_of == exact.size_of
    assert blocked.max_similarity.keys() == exact.max_similarity.keys()
    for name, value in exact.max_similarity.items():
        assert (value is None) == (blocked.max_similarity[name] is None)
        if value is not None:
            assert abs(value - blocked.max_similarity[name]) < 1e-12
    assert sum(size > 1 for size in exact.size_of.values()) >= 50
