"""The planner's inputs at scale: the driver keeps only the compact columns pairing decides from
(inputs.PlanInputs, read file by file), and the big ones (landmarks, embeddings, descriptors, paths) live in
one Arrow table in Ray's object store, built by a task. The embedding work of pairing (duplicate resolution,
identity clusters) runs in tasks next to that table, and the plan files carry source rows that the read tasks turn
into full plan rows (gather.read_plan_rows; `ray.get` of the table is zero-copy on a node).

Both read the same committed `sources` files in the same order, so a row index means the same source in both.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import fsspec
import numpy as np
import pyarrow as pa
import ray

from manifests.integrity import read_shard, shard_rows
from manifests.scan import release_arrow_memory
from manifests.schemas import PLAN_FEATURE_COLUMNS, SOURCES
from manifests.store import ManifestStore
from pipeline.planning.clusters import IdentityClusters, cluster_centroids, cluster_embedding_rows
from pipeline.planning.features import resemblance
from pipeline.planning.inputs import PLANNER_COLUMNS, PlanInputs

# The features task mostly reads storage; like the plan read tasks, it must not wait for a whole CPU.
FEATURES_TASK_CPUS = 0.25
_BATCH_ROWS = 65_536

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


def _read(fs: fsspec.AbstractFileSystem, path: str, columns: list[str]) -> pa.Table:
    return read_shard(fs, path, columns=columns, schema=SOURCES)  # page checksums verified, damage named


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _features_table(fs: fsspec.AbstractFileSystem, files: list[str], columns: list[str]) -> pa.Table:
    """`columns` of the `files`, in order, one chunk per column (fast `take`)."""
    table = pa.concat_tables([_read(fs, f, columns) for f in files]) if files \
        else SOURCES.empty_table().select(columns)
    return table.combine_chunks()


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _resemblance(embeddings: pa.Table, queries: list[tuple[int, list[int]]]) -> list[float] | None:
    return resemblance(embeddings.column("embedding"), queries)


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _clusters(embeddings: pa.Table, names: list[str], order: np.ndarray, starts: np.ndarray,
              threshold: float | None) -> IdentityClusters:
    return cluster_embedding_rows(names, order, starts, embeddings.column("embedding"), threshold)


class RayFeatures:
    """features.SourceFeatures over the features table in the object store, in two parts read by two tasks
    at once: the embeddings (`embeddings`, all that duplicates and clusters need, so that the planner waits for
    them only) and the other PLAN_FEATURE_COLUMNS; `refs` are both (their columns together are the features table)."""

    def __init__(self, embeddings: ray.ObjectRef, rest: ray.ObjectRef) -> None:
        self.embeddings = embeddings
        self.refs = [rest, embeddings]

    def wait_embeddings(self) -> None:
        """Until the embeddings table exists (the tasks that read the features have their workers by then)."""
        ray.wait([self.embeddings], fetch_local=False)

    def resemblance(self, queries: list[tuple[int, list[int]]]) -> list[float] | None:
        return ray.get(_resemblance.remote(self.embeddings, queries))

    def clusters(self, names: list[str], order: np.ndarray, starts: np.ndarray,
                 threshold: float | None) -> IdentityClusters:
        if threshold is None or len(names) < 2:  # no clustering: no need to wait for the embeddings
            return cluster_centroids(names, None, threshold)
        return ray.get(_clusters.remote(self.embeddings, names, order, starts, threshold))


def _planner_batches(fs: fsspec.AbstractFileSystem, files: list[str], columns: list[str]) -> Iterator[pa.Table]:
    """The planner's columns, one committed file at a time (as ManifestStore.read_table reads them)."""
    for path in files:
        table = _read(fs, path, columns)
        for start in range(0, table.num_rows, _BATCH_ROWS):
            yield table.slice(start, _BATCH_ROWS)
        del table
        _release_memory()


def _release_memory() -> None:
    """Hand freed memory back to the OS: Arrow's pool, and glibc's heap (reading file after file otherwise leaves
    hundreds of MB of freed-but-kept pages at 1M sources)."""
    release_arrow_memory()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _rows(fs: fsspec.AbstractFileSystem, files: list[str]) -> int:
    return sum(shard_rows(fs, path) for path in files)


def plan_sources(store: ManifestStore) -> tuple[PlanInputs, RayFeatures]:
    """The committed sources as the planner's compact inputs (on the driver) and the features table (a task; the
    driver never holds it)."""
    files = store.committed_files("sources")
    embeddings = _features_table.remote(store.fs, files, ["embedding"])  # first: the planner waits for it
    rest = _features_table.remote(store.fs, files, [c for c in PLAN_FEATURE_COLUMNS if c != "embedding"])
    features = RayFeatures(embeddings, rest)
    columns = PLANNER_COLUMNS + ["expression_probs"]
    inputs = PlanInputs.from_batches(_planner_batches(store.fs, files, columns), _rows(store.fs, files))
    _release_memory()
    return inputs, features
