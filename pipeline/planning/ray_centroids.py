"""Identity centroids computed where the embedding blocks are (ray_features.FeatureBlocks): one Ray task per block,
so no process maps the whole embedding column (at 5M sources that was 6.5 GB in the clustering task).

A block's task computes the centroids of the identities whose rows all lie in that block (clusters.identity_centroids,
the same arithmetic as the whole-column path) and hands back the normalised rows of the identities that span several
blocks; those are put together in row order and averaged by the caller (clusters.means_of_rows). Every centroid is
therefore equal, bit for bit, to the whole-column one: same clusters, same max_similarity. The caller holds the
(identities, d) centroids and the rows of the identities split over blocks (few: sources are committed by ingest
file, an identity's images mostly together), never a block it does not need.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import ray

from pipeline.planning.clusters import identity_centroids, means_of_rows, normalised_rows

# A block task is a short numpy pass over one block. It reserves no CPU: it runs inside the planning of a round,
# while the stage actors already hold the CPUs waiting for the plan (a task that needed one could never start: the
# round would wait for itself, as the multi-node kill test showed after a node was lost). At most this many run (and
# hold a block) at once.
CENTROID_TASK_CPUS = 0
CENTROID_TASKS_IN_FLIGHT = 4


@ray.remote(num_cpus=CENTROID_TASK_CPUS)
def _block_centroids(block: pa.Table, first_row: int, order: np.ndarray, starts: np.ndarray, whole: np.ndarray,
                     split_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centroids of identities `whole` (all their rows in this block) and the normalised rows at positions
    `split_positions` of `order` (identities split over blocks)."""
    column = block.column("embedding")
    cent = identity_centroids(column, order, starts, whole, offset=first_row)
    rows = normalised_rows(column, order[split_positions] - first_row) if len(split_positions) \
        else np.zeros((0, cent.shape[1]))
    return cent, rows


def block_centroids(embeddings: Sequence[ray.ObjectRef], block_starts: np.ndarray, order: np.ndarray,
                    starts: np.ndarray) -> np.ndarray | None:
    """The (identities, d) centroids of identities whose rows are order[starts[k]:starts[k + 1]], from the
    embedding blocks (block b holds rows block_starts[b]:block_starts[b + 1]) by one task per block; None when the
    embeddings are empty."""
    n = len(starts) - 1
    block_of = np.searchsorted(block_starts, order, side="right") - 1  # the block of each position of `order`
    first = np.minimum.reduceat(block_of, starts[:-1]) if n else np.zeros(0, np.int64)
    last = np.maximum.reduceat(block_of, starts[:-1]) if n else np.zeros(0, np.int64)
    split = first != last
    split_at = np.flatnonzero(np.repeat(split, np.diff(starts)))  # positions of the split identities' rows
    order_ref, starts_ref = ray.put(order), ray.put(starts)
    cent: np.ndarray | None = None
    rows: np.ndarray | None = None
    pending: dict[ray.ObjectRef, tuple[np.ndarray, np.ndarray]] = {}
    todo = list(range(len(embeddings)))
    while todo or pending:
        while todo and len(pending) < CENTROID_TASKS_IN_FLIGHT:
            b = todo.pop(0)
            whole = np.flatnonzero(~split & (first == b))
            mine = split_at[block_of[split_at] == b]
            if len(whole) or len(mine):
                ref = _block_centroids.remote(embeddings[b], int(block_starts[b]), order_ref, starts_ref, whole,
                                              mine)
                pending[ref] = (whole, mine)
        if not pending:
            continue
        [ref], _ = ray.wait(list(pending), num_returns=1)
        whole, mine = pending.pop(ref)
        part, split_rows = ray.get(ref)
        del ref
        d = max(part.shape[1], split_rows.shape[1])
        if cent is None and d:  # the first block with embeddings gives d (one embedder: every row has d values)
            cent, rows = np.zeros((n, d)), np.zeros((len(split_at), d))
        if cent is None or rows is None:
            continue
        if len(whole) and part.shape[1] == d:
            cent[whole] = part
        if len(mine) and split_rows.shape[1] == d:
            rows[np.searchsorted(split_at, mine)] = split_rows
    if cent is None or rows is None:
        return None
    if len(split_at):
        _split_means(cent, rows, np.flatnonzero(split), np.diff(starts))
    return cent


def _split_means(cent: np.ndarray, rows: np.ndarray, split_ids: np.ndarray, sizes: np.ndarray) -> None:
    """cent[k] for the split identities from their normalised rows (`rows`: every split identity's rows one after
    another, in `order`), identities of one size together as in clusters.identity_centroids."""
    offsets = np.concatenate([[0], np.cumsum(sizes[split_ids])])
    for size in np.unique(sizes[split_ids]).tolist():
        same = np.flatnonzero(sizes[split_ids] == size)
        index = (offsets[same][:, None] + np.arange(size)).reshape(-1)
        cent[split_ids[same]] = means_of_rows(rows[index], size)
