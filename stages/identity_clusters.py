"""One person under several identity names: cluster identities whose mean face embeddings are near-identical.

Each identity's centroid is the L2-normalised mean of its sources' (L2-normalised) embeddings; two identities
whose centroids have cosine >= `threshold` are the same person, and clusters are the connected components. A
cluster is named by its first identity in sorted order. Pairing never draws j from i's cluster and releases
split by cluster, so one person never lands in two splits. Pure numpy: runs on the driver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass
class IdentityClusters:
    cluster_of: dict[str, str]  # identity -> cluster name
    size_of: dict[str, int]  # cluster name -> number of identities
    max_similarity: dict[str, float | None]  # identity -> highest centroid cosine to another member

    def table(self, threshold: float | None, embedding_model: str | None, run_id: str) -> pa.Table:
        from manifests.schemas import IDENTITY_CLUSTERS

        ids = sorted(self.cluster_of)
        return pa.table({
            "identity": ids, "cluster": [self.cluster_of[i] for i in ids],
            "cluster_size": pa.array([self.size_of[self.cluster_of[i]] for i in ids], pa.int32()),
            "max_similarity": pa.array([self.max_similarity.get(i) for i in ids], pa.float32()),
            "threshold": pa.array([threshold] * len(ids), pa.float32()),
            "embedding_model": [embedding_model] * len(ids), "run_id": [run_id] * len(ids)},
            schema=IDENTITY_CLUSTERS)


def embedding_matrix(column: pa.ChunkedArray) -> np.ndarray:
    """An (n, d) float64 matrix of a list<float32> column (rows of one embedder, equal lengths)."""
    n = len(column)
    if n == 0:
        return np.zeros((0, 0))
    flat = pa.concat_arrays(list(column.chunks)) if column.num_chunks != 1 else column.chunk(0)
    values = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    return values.reshape(n, -1)


def cluster_identities(members: dict[str, list[int]], emb: np.ndarray, threshold: float | None) -> IdentityClusters:
    """Cluster identities (name -> row indices into `emb`) by centroid cosine >= threshold (None: no clustering)."""
    names = sorted(members)
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    best: dict[str, float | None] = {n: None for n in names}
    if threshold is not None and len(names) > 1 and emb.size:
        cent = np.stack([emb[members[n]].mean(axis=0) for n in names])
        cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
        sim = cent @ cent.T
        np.fill_diagonal(sim, -np.inf)
        for a, b in zip(*np.nonzero(sim >= threshold), strict=True):
            if a < b:
                ra, rb = find(names[a]), find(names[b])
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        for k, n in enumerate(names):
            row = [sim[k, m] for m in range(len(names)) if m != k and find(names[m]) == find(n)]
            best[n] = float(max(row)) if row else None
    cluster_of = {n: find(n) for n in names}
    size_of: dict[str, int] = {}
    for c in cluster_of.values():
        size_of[c] = size_of.get(c, 0) + 1
    return IdentityClusters(cluster_of, size_of, best)
