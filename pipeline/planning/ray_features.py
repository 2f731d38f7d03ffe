"""The planner's features at scale: the big columns (landmarks, embeddings, descriptors, paths) live in one Arrow
table in Ray's object store, built by two tasks (the compact columns pairing decides from are read by the planning
task, ray_planner.py). The embedding work of pairing (duplicate resolution,
identity clusters) runs in tasks next to that table, and the plan files carry source rows that the read tasks turn
into full plan rows (gather.read_plan_rows; `ray.get` of the table is zero-copy on a node).

Both read the same committed `sources` files in the same order, so a row index means the same source in both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from manifests.schemas import PLAN_FEATURE_COLUMNS, SOURCES
from manifests.store import ManifestStore
from pipeline.planning import clusters, pair_search
from pipeline.planning.clusters import IdentityClusters, cluster_centroids, cluster_embedding_rows
from pipeline.planning.features import resemblance

log = logging.getLogger(__name__)

# The features task mostly reads storage; like the plan read tasks, it must not wait for a whole CPU.
FEATURES_TASK_CPUS = 0.25

# The features table: one object-store table, or parts whose columns together form it (RayFeatures.refs).
Features = ray.ObjectRef | list[ray.ObjectRef]


def features_table(features: Features) -> pa.Table:
    """The features table from its object-store parts (zero-copy `ray.get` on a node, columns side by side)."""
    parts = ray.get(features if isinstance(features, list) else [features])
    table = parts[0]
    for part in parts[1:]:
        for field, column in zip(part.schema, part.columns, strict=True):
            table = table.append_column(field, column)
    return table


def read_sources(fs: fsspec.AbstractFileSystem, path: str, columns: list[str]) -> pa.Table:
    """`columns` of one committed sources file."""
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh, columns=columns, schema=SOURCES)


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _features_table(fs: fsspec.AbstractFileSystem, files: list[str], columns: list[str]) -> pa.Table:
    """`columns` of the `files`, in order, one chunk per column (fast `take`)."""
    table = pa.concat_tables([read_sources(fs, f, columns) for f in files]) if files \
        else SOURCES.empty_table().select(columns)
    return table.combine_chunks()


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _resemblance(embeddings: pa.Table, queries: list[tuple[int, list[int]]]) -> list[float] | None:
    return resemblance(embeddings.column("embedding"), queries)


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _clusters(embeddings: pa.Table, names: list[str], order: np.ndarray, starts: np.ndarray,
              threshold: float | None, search: pair_search.PairSearch) -> IdentityClusters:
    return cluster_embedding_rows(names, order, starts, embeddings.column("embedding"), threshold, search)


# A pair-search shard is CPU-bound faiss work on one thread: one CPU each, so that a cluster's nodes share them.
SEARCH_TASK_CPUS = 1.0


@ray.remote(num_cpus=SEARCH_TASK_CPUS)
def _search_shard(blob: np.ndarray, c32: np.ndarray, a0: int, a1: int, threshold: float) -> tuple[np.ndarray, str]:
    """One shard's candidate pairs, and the node it ran on."""
    pairs = pair_search.shard_candidates(blob, c32[a0:a1], a0, threshold, threads=1)
    return pairs, ray.get_runtime_context().get_node_id()


def ray_shards(blob: np.ndarray, c32: np.ndarray, shards: Sequence[tuple[int, int]],
               threshold: float) -> list[np.ndarray]:
    """pair_search.ShardMap on Ray tasks: the index and the float32 centroids put once, a task per shard."""
    blob_ref, c32_ref = ray.put(blob), ray.put(c32)
    done = ray.get([_search_shard.remote(blob_ref, c32_ref, a0, a1, threshold) for a0, a1 in shards])
    log.info("identity pair search: %d shards of %d centroids on %d node(s)", len(shards), len(c32),
             len({node for _, node in done}))
    return [pairs for pairs, _ in done]


def ray_pair_search() -> pair_search.PairSearch:
    """The pair search on Ray tasks, with this process's limits (clusters.EXACT_MATRIX_IDENTITIES,
    pair_search.FLAT_INDEX_IDENTITIES and SHARD_ROWS, read when called)."""
    return pair_search.PairSearch(ray_shards, clusters.EXACT_MATRIX_IDENTITIES, pair_search.FLAT_INDEX_IDENTITIES,
                                  pair_search.SHARD_ROWS)


class RayFeatures:
    """features.SourceFeatures over the features table in the object store, in two parts read by two tasks
    at once: the embeddings (`embeddings`, all that duplicates and clusters need, so that the planner waits for
    them only) and the other PLAN_FEATURE_COLUMNS; `refs` are both (their columns together are the features table)."""

    def __init__(self, embeddings: ray.ObjectRef, rest: ray.ObjectRef,
                 search: pair_search.PairSearch | None = None) -> None:
        self.embeddings = embeddings
        self.refs = [rest, embeddings]
        self.search = search or ray_pair_search()  # the limits of the process that made it (the driver)

    def wait_embeddings(self) -> None:
        """Until the embeddings table exists (the tasks that read the features have their workers by then)."""
        ray.wait([self.embeddings], fetch_local=False)

    def resemblance(self, queries: list[tuple[int, list[int]]]) -> list[float] | None:
        return ray.get(_resemblance.remote(self.embeddings, queries))

    def clusters(self, names: list[str], order: np.ndarray, starts: np.ndarray,
                 threshold: float | None) -> IdentityClusters:
        if threshold is None or len(names) < 2:  # no clustering: no need to wait for the embeddings
            return cluster_centroids(names, None, threshold)
        return ray.get(_clusters.remote(self.embeddings, names, order, starts, threshold, self.search))


def plan_features(store: ManifestStore) -> RayFeatures:
    """The features table of the committed sources, read by two tasks (the driver never holds it)."""
    files = store.committed_files("sources")
    embeddings = _features_table.remote(store.fs, files, ["embedding"])  # first: the planner waits for it
    rest = _features_table.remote(store.fs, files, [c for c in PLAN_FEATURE_COLUMNS if c != "embedding"])
    return RayFeatures(embeddings, rest)
