"""Relative identity test: is R identified as j, not i, against a gallery of the run's identities?

The gallery holds one L2-normalised centroid per identity (mean of its sources' embeddings). Two margins of
cosine similarity: over i (identity leak) and over the nearest identity other than j (ambiguous). Relative
margins hold across populations where absolute thresholds do not: a corpus of look-alikes raises every
similarity, not the ordering of j over i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


@dataclass(frozen=True)
class GalleryMargins:
    margin_ji: float  # sim(R, j) - sim(R, i)
    margin_j: float  # sim(R, j) - max over k != j of sim(R, k)
    nearest_other: str  # the identity k != j most similar to R


class IdentityGallery:
    def __init__(self, names: list[str], centroids: np.ndarray) -> None:
        self.names = list(names)
        self.index = {n: k for k, n in enumerate(self.names)}
        self.centroids = _unit(np.asarray(centroids, np.float64).reshape(len(self.names), -1)) \
            if self.names else np.zeros((0, 0))

    @classmethod
    def from_embeddings(cls, identities: list[str], embeddings: np.ndarray) -> IdentityGallery:
        e = _unit(np.asarray(embeddings, np.float64))
        names = sorted(set(identities))
        ident = np.asarray(identities)
        return cls(names, np.stack([e[ident == n].mean(axis=0) for n in names]) if names else np.zeros((0, 0)))

    @classmethod
    def from_sources(cls, sources: pa.Table) -> IdentityGallery:
        """From a `sources` table's identity and embedding columns."""
        if sources.num_rows == 0:
            return cls([], np.zeros((0, 0)))
        emb = np.asarray(sources.column("embedding").to_pylist(), np.float64)
        return cls.from_embeddings(sources.column("identity").to_pylist(), emb)

    def with_identity(self, name: str, embedding: np.ndarray | list[float]) -> IdentityGallery:
        """This gallery, plus `name` (from one embedding) when it is missing."""
        if name in self.index:
            return self
        e = _unit(np.asarray(embedding, np.float64).reshape(1, -1))
        cents = np.concatenate([self.centroids, e]) if len(self.names) else e
        return IdentityGallery(self.names + [name], cents)

    def margins(self, r_embedding: np.ndarray | list[float], i: str, j: str) -> GalleryMargins:
        if i not in self.index or j not in self.index:
            raise KeyError(f"identities {i!r} and {j!r} must both be in the gallery")
        sims = self.centroids @ _unit(np.asarray(r_embedding, np.float64).reshape(-1))
        kj = self.index[j]
        others = sims.copy()
        others[kj] = -np.inf
        k = int(np.argmax(others))
        return GalleryMargins(float(sims[kj] - sims[self.index[i]]), float(sims[kj] - others[k]), self.names[k])
