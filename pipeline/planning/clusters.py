"""One person under several identity names: cluster identities whose mean face embeddings are near-identical.

Each identity's centroid is the L2-normalised mean of its sources' (L2-normalised) embeddings; two identities
whose centroids have cosine >= `threshold` are the same person, and clusters are the connected components. A
cluster is named by its first identity in sorted order. Pairing never draws j from i's cluster and releases
split by cluster, so one person never lands in two splits. numpy, and faiss for the pair search of many identities
(pair_search.py); runs where the embeddings are (ray_features.py: a Ray task next to them, the search's shards on
Ray tasks across the nodes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.planning.pair_search import PairSearch, similar_pairs


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


def normalised_rows(column: pa.ChunkedArray | pa.Array, rows: np.ndarray | list[int]) -> np.ndarray:
    """The L2-normalised float64 embeddings of `rows` of a list<float32> column: the same values, bit for bit, as
    those rows of `embedding_matrix(column)` normalised row by row (every operation is per row)."""
    taken = column.take(pa.array(np.asarray(rows, np.int64)))
    emb = embedding_matrix(taken if isinstance(taken, pa.ChunkedArray) else pa.chunked_array([taken]))
    if emb.size:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb


def cluster_identities(members: dict[str, list[int]], emb: np.ndarray, threshold: float | None) -> IdentityClusters:
    """Cluster identities (name -> row indices into `emb`) by centroid cosine >= threshold (None: no clustering)."""
    names = sorted(members)
    cent = None
    if threshold is not None and len(names) > 1 and emb.size:
        cent = np.stack([emb[members[n]].mean(axis=0) for n in names])
    return cluster_centroids(names, cent, threshold)


def cluster_embedding_rows(names: list[str], order: np.ndarray, starts: np.ndarray, column: pa.ChunkedArray,
                           threshold: float | None, search: PairSearch | None = None) -> IdentityClusters:
    """cluster_identities for identities `names` (sorted) whose rows of the embedding `column` are
    order[starts[k]:starts[k + 1]]: the same centroids, bit for bit, computed a bounded block of identities at a
    time (identities with the same number of rows together), never the whole (n, d) matrix."""
    cent = None
    if threshold is not None and len(names) > 1 and len(column) and pc.max(pc.list_value_length(column)).as_py():
        cent = identity_centroids(column, order, starts, np.arange(len(names)))
    return cluster_centroids(names, cent, threshold, search)


def identity_centroids(column: pa.ChunkedArray | pa.Array, order: np.ndarray, starts: np.ndarray,
                       which: np.ndarray, offset: int = 0) -> np.ndarray:
    """The mean L2-normalised embeddings of identities `which` (rows order[starts[k]:starts[k + 1]] - offset of
    `column`), a (len(which), d) float64 array: identities with the same number of rows together, at most
    _CENTROID_ROWS rows at a time, each equal bit for bit to the identity's emb[rows].mean(axis=0)."""
    sizes = np.diff(starts)[which]
    cent = np.zeros((len(which), 0))
    for size in np.unique(sizes).tolist():
        same = np.flatnonzero(sizes == size)
        step = max(1, _CENTROID_ROWS // size)
        for c0 in range(0, len(same), step):
            part = same[c0:c0 + step]
            rows = order[(starts[which[part]][:, None] + np.arange(size)).reshape(-1)] - offset
            emb = normalised_rows(column, rows)
            if cent.shape[1] != emb.shape[1]:
                cent = np.zeros((len(which), emb.shape[1]))
            cent[part] = means_of_rows(emb, size)
    return cent


def means_of_rows(emb: np.ndarray, size: int) -> np.ndarray:
    """Per identity the mean of its `size` consecutive rows of `emb` (identities one after another): the mean
    over axis 1 of (identities, rows, d), equal to each identity's emb[rows].mean(axis=0)."""
    return emb.reshape(len(emb) // size, size, -1).mean(axis=1)


# Up to this many identities the whole similarity matrix is computed at once, as it always was. Beyond, the pairs
# come from a faiss range search (pair_search.py: exact flat index, IVF above its size), every candidate decided in
# float64 as the matrix decides it; the query shards run here or on Ray tasks (pair_search.PairSearch).
EXACT_MATRIX_IDENTITIES = 4096
_CENTROID_ROWS = 65_536


def cluster_centroids(names: list[str], cent: np.ndarray | None, threshold: float | None,
                      search: PairSearch | None = None) -> IdentityClusters:
    """Union identities (sorted names; `cent` their mean embeddings, None: no clustering) whose L2-normalised
    centroids have cosine >= threshold (`search`: where and how the pair search runs, default here)."""
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    best: dict[str, float | None] = {n: None for n in names}
    if threshold is not None and cent is not None:
        cent = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
        if len(names) <= (EXACT_MATRIX_IDENTITIES if search is None or search.matrix_limit is None
                          else search.matrix_limit):
            sim = cent @ cent.T
            np.fill_diagonal(sim, -np.inf)
            pairs = [(a, b) for a, b in zip(*np.nonzero(sim >= threshold), strict=True) if a < b]
        else:
            pairs = similar_pairs(cent, threshold, search)
        for a, b in pairs:
            ra, rb = find(names[a]), find(names[b])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        groups: dict[str, list[int]] = {}
        for k, n in enumerate(names):
            groups.setdefault(find(n), []).append(k)
        for idx in groups.values():
            if len(idx) < 2:
                continue
            # each cluster's own product on either path (not the whole matrix's entries): BLAS may sum a big and a
            # small product in different orders (seen on AVX-512: the last bit of max_similarity differed)
            sub = cent[idx] @ cent[idx].T
            np.fill_diagonal(sub, -np.inf)
            for k, value in zip(idx, sub.max(axis=1).tolist(), strict=True):
                best[names[k]] = float(value)
    cluster_of = {n: find(n) for n in names}
    size_of: dict[str, int] = {}
    for c in cluster_of.values():
        size_of[c] = size_of.get(c, 0) + 1
    return IdentityClusters(cluster_of, size_of, best)
