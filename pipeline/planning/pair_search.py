"""Pairs of identity centroids with cosine >= threshold, for clusters.py: candidates from a faiss index, every
candidate re-checked exactly, so a merge decision is never approximate.

The candidate step is a range search at `threshold - CANDIDATE_MARGIN` in float32 (the margin is far above float32
rounding on unit vectors), on an exact flat inner-product index up to FLAT_INDEX_IDENTITIES centroids (candidate
recall 1: the pairs are those the whole float64 matrix gives) and on an IVF index above it (only the candidate
step is approximate; its recall is measured, benchmarks/bench_identity_search.py). Each candidate (a < b) is then
decided in float64 on the unit centroids, as the whole-matrix path decides it. The query side is cut into shards
(`ShardMap`): here one after another on faiss's threads, on Ray tasks across a cluster's nodes in
ray_features.py (each task gets the serialised index and its shard of float32 centroids, never the float64 ones).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

# Up to this many centroids the candidate index is exact (IndexFlatIP: n^2 x 128 multiply-adds); above it,
# IVF: k-means cells (IVF_CELLS_PER_SQRT x sqrt(n)), each query scanning IVF_PROBES cells.
FLAT_INDEX_IDENTITIES = 50_000
IVF_CELLS_PER_SQRT = 4
IVF_PROBES = 16
IVF_TRAIN_POINTS_PER_CELL = 40  # k-means training sample: this many centroids per cell (faiss's minimum is 39)
IVF_TRAIN_ITERATIONS = 10
IVF_SEED = 1234
CANDIDATE_MARGIN = 1e-3
SHARD_ROWS = 65_536
_MAX_THREADS = 8


@dataclass(frozen=True)
class SearchSpec:
    """Which index finds the candidates: "flat" (exact) or "ivf" with `cells` k-means cells, `probes` scanned."""

    kind: str
    cells: int = 0
    probes: int = 0

    @classmethod
    def for_size(cls, n: int, flat_limit: int | None = None) -> SearchSpec:
        if n <= (FLAT_INDEX_IDENTITIES if flat_limit is None else flat_limit):
            return cls("flat")
        cells = int(IVF_CELLS_PER_SQRT * np.sqrt(n))
        return cls("ivf", cells, min(IVF_PROBES, cells))


def search_threads() -> int:
    """Threads for faiss here: the CPUs this process may run on (at most _MAX_THREADS)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, cpus))


def build_index(c32: np.ndarray, spec: SearchSpec) -> faiss.Index:
    """A faiss inner-product index of the float32 unit centroids (IVF trained on a seeded sample of them)."""
    d = c32.shape[1]
    if spec.kind == "flat":
        flat = faiss.IndexFlatIP(d)
        flat.add(c32)
        return flat
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, spec.cells, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = IVF_TRAIN_ITERATIONS
    ivf.cp.seed = IVF_SEED
    ivf.cp.max_points_per_centroid = IVF_TRAIN_POINTS_PER_CELL
    sample = min(len(c32), spec.cells * IVF_TRAIN_POINTS_PER_CELL)
    rows = np.sort(np.random.default_rng(IVF_SEED).choice(len(c32), sample, replace=False))
    ivf.train(np.ascontiguousarray(c32[rows]))
    ivf.nprobe = spec.probes
    ivf.add(c32)
    return ivf


def serialise(index: faiss.Index) -> np.ndarray:
    """The index as bytes (a uint8 array) to ship to a task."""
    return faiss.serialize_index(index)


def deserialise(blob: np.ndarray) -> faiss.Index:
    return faiss.deserialize_index(blob)


def candidate_pairs(index: faiss.Index, queries: np.ndarray, a0: int, threshold: float) -> np.ndarray:
    """(k, 2) int64 candidate pairs (a, b), a < b, a = a0 + the query's row: inner product >= threshold - margin."""
    lims, _, found = index.range_search(np.ascontiguousarray(queries, np.float32), threshold - CANDIDATE_MARGIN)
    a = np.repeat(np.arange(a0, a0 + len(queries), dtype=np.int64), np.diff(lims).astype(np.int64))
    b = found.astype(np.int64)
    keep = a < b
    return np.stack([a[keep], b[keep]], axis=1)


def shard_candidates(blob: np.ndarray, queries: np.ndarray, a0: int, threshold: float,
                     threads: int | None = None) -> np.ndarray:
    """candidate_pairs of one shard of queries against a serialised index (what a search task runs)."""
    faiss.omp_set_num_threads(threads or search_threads())
    return candidate_pairs(deserialise(blob), queries, a0, threshold)


# Runs shard_candidates(blob, c32[a0:a1], a0, threshold) for every (a0, a1) and returns the results (any order).
ShardMap = Callable[[np.ndarray, np.ndarray, Sequence[tuple[int, int]], float], list[np.ndarray]]


def local_shards(blob: np.ndarray, c32: np.ndarray, shards: Sequence[tuple[int, int]],
                 threshold: float) -> list[np.ndarray]:
    """ShardMap in this process: one shard after another, each on faiss's threads."""
    index = deserialise(blob)
    faiss.omp_set_num_threads(search_threads())
    return [candidate_pairs(index, c32[a0:a1], a0, threshold) for a0, a1 in shards]


@dataclass(frozen=True)
class PairSearch:
    """Where and how the pair search runs: `shard_map` (None: here), the whole-matrix limit of clusters.py (None:
    its EXACT_MATRIX_IDENTITIES), the flat-index limit (None: FLAT_INDEX_IDENTITIES) and the rows per shard (None:
    SHARD_ROWS), the limits read when the search runs."""

    shard_map: ShardMap | None = None
    matrix_limit: int | None = None
    flat_limit: int | None = None
    shard_rows: int | None = None


def shards_of(n: int, rows: int) -> list[tuple[int, int]]:
    return [(a0, min(n, a0 + rows)) for a0 in range(0, n, rows)]


def exact_check(cent: np.ndarray, pairs: np.ndarray, threshold: float) -> np.ndarray:
    """The candidate pairs whose float64 cosine (unit centroids) is >= threshold, decided as the whole matrix
    decides them, in blocks (bounded memory)."""
    keep = np.zeros(len(pairs), bool)
    for p0 in range(0, len(pairs), 1 << 16):
        a, b = pairs[p0:p0 + (1 << 16), 0], pairs[p0:p0 + (1 << 16), 1]
        keep[p0:p0 + len(a)] = np.einsum("ij,ij->i", cent[a], cent[b]) >= threshold
    return pairs[keep]


def similar_pairs(cent: np.ndarray, threshold: float, search: PairSearch | None = None,
                  spec: SearchSpec | None = None) -> list[tuple[int, int]]:
    """Pairs a < b of unit float64 centroids with cosine >= threshold (the float64 decision on every candidate
    of the index's range search), sorted."""
    search = search or PairSearch()
    c32 = np.ascontiguousarray(cent, np.float32)
    faiss.omp_set_num_threads(search_threads())
    blob = serialise(build_index(c32, spec or SearchSpec.for_size(len(cent), search.flat_limit)))
    shards = shards_of(len(cent), search.shard_rows or SHARD_ROWS)
    found = (search.shard_map or local_shards)(blob, c32, shards, threshold)
    candidates = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    decided = exact_check(cent, candidates, threshold)
    decided = decided[np.lexsort((decided[:, 1], decided[:, 0]))]
    return list(zip(decided[:, 0].tolist(), decided[:, 1].tolist(), strict=True))


def pair_recall(found: set[tuple[int, int]], exact: set[tuple[int, int]]) -> float:
    """The share of the exact pairs that the search found (1.0 when there are none)."""
    return len(found & exact) / len(exact) if exact else 1.0
