"""The embedding work of the planner (duplicate resolution, identity clusters), done where the embeddings are: the
SourceFeatures interface, and its implementation over a sources table in this process (TableFeatures; the one
over Ray's object store is ray_features.RayFeatures)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from pipeline.planning.clusters import IdentityClusters, cluster_embedding_rows, normalised_rows


class SourceFeatures(Protocol):
    """The embedding work of the planner, done where the embeddings are (the sources table, or Ray's object store:
    pipeline/planning/ray_features.py)."""

    def resemblance(self, queries: list[tuple[int, list[int]]]) -> list[float] | None:
        """max cosine of row i's embedding with rows `others`, per (i, others); None when there are no
        embeddings."""
        ...

    def clusters(self, names: list[str], order: np.ndarray, starts: np.ndarray,
                 threshold: float | None) -> IdentityClusters:
        """cluster_embedding_rows over the embedding column."""
        ...


def resemblance(column: pa.ChunkedArray, queries: list[tuple[int, list[int]]]) -> list[float] | None:
    """max(emb[others] @ emb[i]) per query, emb the L2-normalised float64 embeddings (rows of one embedder)."""
    out = []
    for i, others in queries:
        emb = normalised_rows(column, [*others, i])
        if not emb.size:
            return None
        out.append(float(max(emb[:-1] @ emb[-1])) if others else float("-inf"))
    return out


@dataclass
class TableFeatures:
    """SourceFeatures over a sources table in this process (plan_round)."""

    table: pa.Table

    def resemblance(self, queries: list[tuple[int, list[int]]]) -> list[float] | None:
        return resemblance(self.table.column("embedding"), queries)

    def clusters(self, names: list[str], order: np.ndarray, starts: np.ndarray,
                 threshold: float | None) -> IdentityClusters:
        return cluster_embedding_rows(names, order, starts, self.table.column("embedding"), threshold)
