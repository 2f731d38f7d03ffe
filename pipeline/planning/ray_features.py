"""The planner's features at scale: the big columns (landmarks, embeddings, descriptors, paths) live in Ray's
object store in blocks of consecutive source rows (FeatureBlocks), each read by a task (the compact columns pairing
decides from are read by the planning task, ray_planner.py). The embedding work of pairing (duplicate resolution,
identity clusters, the pair search's shards) runs in tasks next to the blocks, and the plan files carry source rows
that the read tasks turn into full plan rows from just the blocks those rows are in (gather.read_plan_rows;
`ray.get` of a block is zero-copy on a node).

Both read the same committed `sources` files in the same order, so a row index means the same source in both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from manifests.integrity import read_shard
from manifests.schemas import PLAN_FEATURE_COLUMNS, SOURCES
from manifests.store import ManifestStore
from pipeline.planning import clusters, pair_search
from pipeline.planning.clusters import IdentityClusters, cluster_centroids
from pipeline.planning.features import resemblance
from pipeline.planning.ray_centroids import block_centroids

log = logging.getLogger(__name__)

# The features task mostly reads storage; like the plan read tasks, it must not wait for a whole CPU.
FEATURES_TASK_CPUS = 0.25

# Source rows per features block (whole committed files are grouped until a block has at least this many rows).
FEATURE_BLOCK_ROWS = 65_536


# While a reader takes its rows out of one block, the next blocks it needs are fetched (or restored from spilled
# storage) by Ray in the background: at most this many ahead.
PREFETCH_BLOCKS = 2


def _prefetch(refs: list[ray.ObjectRef]) -> None:
    """Ask Ray to bring `refs` to this node's object store now, without waiting for them."""
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)


@dataclass(frozen=True)
class FeatureBlocks:
    """The features table in blocks of consecutive source rows, each block one object per part: the embeddings
    (all that duplicates and clusters need) and the other PLAN_FEATURE_COLUMNS. A reader fetches only the blocks
    its rows are in; Ray can spill, restore and move each block alone."""

    embeddings: list[ray.ObjectRef]
    rest: list[ray.ObjectRef]
    starts: np.ndarray  # the first row of each block, then the number of rows

    def embedding_rows(self, rows: np.ndarray) -> pa.ChunkedArray:
        """The embeddings of source rows `rows`, in that order: only the embedding blocks they are in, a block at
        a time."""
        block_of = np.searchsorted(self.starts, rows, side="right") - 1
        parts: list[pa.Array] = []
        order = np.argsort(block_of, kind="stable")
        blocks = np.unique(block_of).tolist()
        for k, b in enumerate(blocks):
            _prefetch([self.embeddings[c] for c in blocks[k + 1:k + 1 + PREFETCH_BLOCKS]])
            mine = rows[order[block_of[order] == b]]
            column = ray.get(self.embeddings[b]).column("embedding")
            parts.extend(column.take(pa.array(mine - self.starts[b])).chunks)
            del column
        taken = pa.chunked_array(parts, SOURCES.field("embedding").type)
        return taken.take(pa.array(np.argsort(order, kind="stable"))) if len(rows) else taken

    def rows(self, rows: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        """The features rows that `rows` (source rows) name, and `rows` as indices into that table: a block at a
        time (fetched, its rows taken, released), so a reader holds one block whatever the rows' spread."""
        block_of = np.searchsorted(self.starts, rows, side="right") - 1
        local = np.empty(len(rows), np.int64)
        parts, at = [], 0
        blocks = np.unique(block_of).tolist() or [0]  # no rows: block 0's columns, no row
        for k, b in enumerate(blocks):
            ahead = blocks[k + 1:k + 1 + PREFETCH_BLOCKS]
            _prefetch([self.rest[c] for c in ahead] + [self.embeddings[c] for c in ahead])
            mine = np.flatnonzero(block_of == b)
            inside = pa.array(rows[mine] - self.starts[b])
            rest, embeddings = ray.get([self.rest[b], self.embeddings[b]])
            part = rest.take(inside)
            for field, column in zip(embeddings.schema, embeddings.columns, strict=True):
                part = part.append_column(field, column.take(inside))
            parts.append(part)
            local[mine] = at + np.arange(len(mine))
            at += len(mine)
            del rest, embeddings
        return pa.concat_tables(parts), local


# What the plan read tasks gather plan rows from (gather.read_plan_rows): the FeatureBlocks put once in the object
# store, so that each of the (many) read tasks carries one reference, not one per block: Ray counts every reference
# a serialised task holds on the driver.
Features = ray.ObjectRef


def read_sources(fs: fsspec.AbstractFileSystem, path: str, columns: list[str]) -> pa.Table:
    """`columns` of one committed sources file, page checksums verified (a damaged file is named)."""
    return read_shard(fs, path, columns=columns, schema=SOURCES)


@ray.remote(num_cpus=FEATURES_TASK_CPUS, num_returns=2)
def _features_table(fs: fsspec.AbstractFileSystem, files: list[str], columns: list[str],
                    *after: object) -> tuple[pa.Table, bool]:
    """`columns` of the `files`, in order, one chunk per column (fast `take`), and a small object that says the
    table exists (what later reads wait for); `after`: what it waited for."""
    return features_table(fs, files, columns), True


def features_table(fs: fsspec.AbstractFileSystem, files: list[str], columns: list[str]) -> pa.Table:
    """`columns` of the `files`, in order, one chunk per column (fast `take`)."""
    table = pa.concat_tables([read_sources(fs, f, columns) for f in files]) if files \
        else SOURCES.empty_table().select(columns)
    return table.combine_chunks()


def block_resemblance(blocks: FeatureBlocks, queries: list[tuple[int, list[int]]]) -> list[float] | None:
    """features.resemblance of `queries` (source rows) from just the embeddings they name, fetched a block at a
    time: the duplicate check never maps the whole embedding column."""
    named = np.unique(np.fromiter((r for i, others in queries for r in (*others, i)), np.int64))
    at = {int(r): k for k, r in enumerate(named.tolist())}
    return resemblance(blocks.embedding_rows(named), [(at[i], [at[o] for o in others]) for i, others in queries])


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _resemblance(blocks: FeatureBlocks, queries: list[tuple[int, list[int]]]) -> list[float] | None:
    return block_resemblance(blocks, queries)


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _clusters(blocks: FeatureBlocks, names: list[str], order: np.ndarray, starts: np.ndarray,
              threshold: float | None, search: pair_search.PairSearch) -> IdentityClusters:
    """cluster_embedding_rows, the centroids computed a block at a time where the blocks are (ray_centroids.py):
    this task never maps the whole embedding column."""
    cent = block_centroids(blocks.embeddings, blocks.starts, order, starts)
    return cluster_centroids(names, cent, threshold, search)


# A pair-search shard is CPU-bound faiss work on one thread. It reserves a tenth of a CPU, not a whole one: the
# planning waits for it while Ray Data's stage actors hold most CPUs idle (with a whole CPU each the 16 shards of a
# 1M-identity search ran one at a time on 2 cores); as many run at once as the cluster has CPUs, and a tenth of a
# CPU keeps them off nodes without any (a head node); they are spread over the nodes that have CPUs.
SEARCH_TASK_CPUS = 0.1


@ray.remote(num_cpus=SEARCH_TASK_CPUS, scheduling_strategy="SPREAD")
def _search_shard(blob: np.ndarray, c32: np.ndarray, a0: int, a1: int, threshold: float) -> tuple[np.ndarray, str]:
    """One shard's candidate pairs, and the node it ran on."""
    pairs = pair_search.shard_candidates(blob, c32[a0:a1], a0, threshold, threads=1)
    return pairs, ray.get_runtime_context().get_node_id()


def ray_shards(blob: np.ndarray, c32: np.ndarray, shards: Sequence[tuple[int, int]],
               threshold: float) -> list[np.ndarray]:
    """pair_search.ShardMap on Ray tasks: the index and the float32 centroids put once, a task per shard, as many
    at once as the cluster has CPUs (each task holds a copy of the index)."""
    blob_ref, c32_ref = ray.put(blob), ray.put(c32)
    limit = max(1, int(ray.cluster_resources().get("CPU", 1)))
    done: list[tuple[np.ndarray, str] | None] = [None] * len(shards)
    pending: dict[ray.ObjectRef, int] = {}
    todo = list(enumerate(shards))
    while todo or pending:
        while todo and len(pending) < limit:
            k, (a0, a1) = todo.pop(0)
            pending[_search_shard.remote(blob_ref, c32_ref, a0, a1, threshold)] = k
        [ref], _ = ray.wait(list(pending), num_returns=1)
        done[pending.pop(ref)] = ray.get(ref)
    results = [d for d in done if d is not None]
    log.info("identity pair search: %d shards of %d centroids on %d node(s)", len(shards), len(c32),
             len({node for _, node in results}))
    return [pairs for pairs, _ in results]


def ray_pair_search() -> pair_search.PairSearch:
    """The pair search on Ray tasks, with this process's limits (clusters.EXACT_MATRIX_IDENTITIES,
    pair_search.FLAT_INDEX_IDENTITIES and SHARD_ROWS, read when called)."""
    return pair_search.PairSearch(ray_shards, clusters.EXACT_MATRIX_IDENTITIES, pair_search.FLAT_INDEX_IDENTITIES,
                                  pair_search.SHARD_ROWS)


class RayFeatures:
    """features.SourceFeatures over the features table in the object store (`blocks`, read block by block by
    tasks, the embeddings first: duplicates and clusters wait for them only)."""

    def __init__(self, blocks: FeatureBlocks, search: pair_search.PairSearch | None = None) -> None:
        self.blocks = blocks
        self.ref: Features = ray.put(blocks)  # for the plan read tasks
        self.search = search or ray_pair_search()  # the limits of the process that made it (the driver)

    def wait_embeddings(self) -> None:
        """Until the embedding blocks exist (the tasks that read the features have their workers by then)."""
        ray.wait(self.blocks.embeddings, num_returns=len(self.blocks.embeddings), fetch_local=False)

    def resemblance(self, queries: list[tuple[int, list[int]]]) -> list[float] | None:
        return ray.get(_resemblance.remote(self.blocks, queries))

    def clusters(self, names: list[str], order: np.ndarray, starts: np.ndarray,
                 threshold: float | None) -> IdentityClusters:
        if threshold is None or len(names) < 2:  # no clustering: no need to wait for the embeddings
            return cluster_centroids(names, None, threshold)
        return ray.get(_clusters.remote(self.blocks, names, order, starts, threshold, self.search))


def file_rows(fs: fsspec.AbstractFileSystem, files: list[str]) -> list[int]:
    """The rows of each committed sources file (Parquet footers only)."""
    rows = []
    for path in files:
        with fs.open(path, "rb") as fh:
            rows.append(pq.ParquetFile(fh).metadata.num_rows)
    return rows


def feature_groups(files: list[str], rows: list[int],
                   min_rows: int | None = None) -> tuple[list[list[str]], np.ndarray]:
    """The files of each features block (whole files grouped until a block has at least `min_rows` rows, default
    FEATURE_BLOCK_ROWS; one empty block when there is no file) and the blocks' first rows, then the number of
    rows."""
    least = FEATURE_BLOCK_ROWS if min_rows is None else min_rows
    groups: list[list[str]] = []
    starts, total, size = [0], 0, 0
    for path, n in zip(files, rows, strict=True):
        if not groups or size >= least:
            if groups:
                starts.append(total)
            groups.append([])
            size = 0
        groups[-1].append(path)
        size += n
        total += n
    starts.append(total)
    return groups or [[]], np.array(starts, np.int64)


def read_blocks(fs: fsspec.AbstractFileSystem, groups: list[list[str]], columns: list[str],
                after: Sequence[ray.ObjectRef] = (), in_flight: int | None = None) -> list[ray.ObjectRef]:
    """A task per block reading `columns` of its files, started once the objects `after` exist (Ray waits for a
    task's arguments), and with `in_flight`, once the read `in_flight` blocks before it is done: the caller orders
    and paces the reads without waiting itself."""
    tables: list[ray.ObjectRef] = []
    done: list[ray.ObjectRef] = []
    for k, group in enumerate(groups):
        before = [done[k - in_flight]] if in_flight and k >= in_flight else []
        refs: Any = _features_table.remote(fs, group, columns, *after, *before)
        tables.append(refs[0])
        done.append(refs[1])
    return tables


REST_COLUMNS = [c for c in PLAN_FEATURE_COLUMNS if c != "embedding"]


def plan_features(store: ManifestStore) -> RayFeatures:
    """The features table of the committed sources, read block by block by tasks (the driver never holds it),
    the embedding blocks first."""
    files = store.committed_files("sources")
    groups, starts = feature_groups(files, file_rows(store.fs, files))
    embeddings = read_blocks(store.fs, groups, ["embedding"])  # first: the planner waits for them
    return RayFeatures(FeatureBlocks(embeddings, read_blocks(store.fs, groups, REST_COLUMNS), starts))
