"""When are two identity names one person? The centroid similarity that separates a run's same-person from its
different-person identities, calibrated from the run's own sources.

The planner merges identities whose centroids (mean of their L2-normalised embeddings) have cosine >= a
threshold (pipeline/planning/clusters.py), so both populations are measured on centroids:

- same person: each identity with two or more photos split in two halves (alternate photos in input order),
  the cosine of the two half-centroids. A half holds half the photos, so this is at most as high as two full
  folders of one person would score: the estimate errs towards not merging.
- different people: the cosine of every pair of identity centroids (a deterministic sample of at most
  `max_identities` identities on a large corpus). A few of these pairs may be one person under two names (the
  very pairs to merge), so their tail is not read off the extreme values: a normal fit of atanh(cosine) with a
  robust centre and spread (median, 1.4826 MAD) gives `different_bound`, the similarity that any of the corpus's
  n(n-1)/2 different-person pairs reaches with probability `expected_false_merges` (a Bonferroni bound).

`same_quantile` is the similarity that `frr` of the same-person halves fall below. When different_bound <
same_quantile the populations are apart and the threshold is same_quantile (a merge needs a similarity as high as
the run's own same-person pairs reach). Otherwise they overlap: no threshold merges people without merging
strangers, so nothing is merged (threshold None) and the record says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

MAX_IDENTITIES = 2000  # different-person pairs are computed over at most this many identities (a sample)
_MIN_PAIRS = 3  # fewer different-person pairs (three identities) fit no distribution
_BLOCK = 256  # centroid rows compared with every centroid at once in merged_groups


@dataclass(frozen=True)
class SamePersonCalibration:
    threshold: float | None  # None: nothing is merged (overlap, or too little data)
    separable: bool
    same_quantile: float | None  # the half-centroid similarity `frr` of the same-person halves fall below
    different_bound: float | None  # the similarity a different-person pair reaches w.p. expected_false_merges
    different_max: float | None  # the highest different-identity centroid similarity seen (may be a real alias)
    frr: float
    expected_false_merges: float
    identities: int
    same_person_halves: int
    different_pairs: int  # pairs in the corpus (n(n-1)/2), the Bonferroni count
    different_pairs_fitted: int  # pairs of the sample the fit used
    reason: str  # why nothing is calibrated ("" when calibrated)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.reason:
            return f"identities are NOT merged: {self.reason}"
        if not self.separable:
            return (f"identities are NOT merged: same- and different-person similarities overlap on this corpus "
                    f"(a different-person centroid pair reaches {self.different_bound:.4f} with probability "
                    f"{self.expected_false_merges:g}, while {self.frr:g} of same-person halves score below "
                    f"{self.same_quantile:.4f})")
        return (f"identities merged at centroid similarity >= {self.threshold:.4f} ({self.frr:g} of same-person "
                f"halves below it; different-person pairs reach {self.different_bound:.4f} with probability "
                f"{self.expected_false_merges:g}, highest seen {self.different_max:.4f})")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _groups(identities: list[str] | np.ndarray) -> dict[str, np.ndarray]:
    ident = np.asarray(identities)
    order = np.argsort(ident, kind="stable")
    names, starts = np.unique(ident[order], return_index=True)
    bounds = np.append(starts, len(order))
    return {str(n): order[bounds[k]:bounds[k + 1]] for k, n in enumerate(names)}


def sampled_names(names: list[str], limit: int) -> list[str]:
    """At most `limit` of `names`, the same ones on every call (by a hash of the name), sorted."""
    if len(names) <= limit:
        return sorted(names)
    return sorted(sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:limit])


def centroids(identities: list[str] | np.ndarray, embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(sorted names, unit centroids): each identity's mean of its L2-normalised embeddings, normalised."""
    e = _unit(np.asarray(embeddings, np.float64))
    groups = _groups(identities)
    names = sorted(groups)
    if not names:
        return [], np.zeros((0, e.shape[1] if e.ndim == 2 else 0))
    return names, _unit(np.stack([e[groups[n]].mean(axis=0) for n in names]))


def half_similarities(identities: list[str] | np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Per identity with >= 2 photos: cosine of the centroids of its even and odd photos (in the given order)."""
    e = _unit(np.asarray(embeddings, np.float64))
    out = []
    for rows in _groups(identities).values():
        if len(rows) >= 2:
            rows = np.sort(rows)
            a, b = _unit(e[rows[0::2]].mean(axis=0)), _unit(e[rows[1::2]].mean(axis=0))
            out.append(float(a @ b))
    return np.asarray(out, np.float64)


def different_pair_bound(sims: np.ndarray, pairs_in_corpus: int, expected_false_merges: float) -> float | None:
    """The similarity any of `pairs_in_corpus` different-person pairs reaches with probability
    `expected_false_merges`, from a robust normal fit of atanh(`sims`); None when they do not spread at all."""
    y = np.arctanh(np.clip(np.asarray(sims, np.float64), -1 + 1e-12, 1 - 1e-12))
    centre = float(np.median(y))
    spread = 1.4826 * float(np.median(np.abs(y - centre)))
    if spread <= 0:  # half the pairs tie: fall back on the standard deviation
        spread = float(np.std(y))
    if spread <= 0:
        return None
    z = NormalDist().inv_cdf(1 - min(0.5, expected_false_merges / max(1, pairs_in_corpus)))
    return float(np.tanh(centre + z * spread))


def calibrate_same_person(identities: list[str] | np.ndarray, embeddings: np.ndarray, frr: float = 0.01,
                          expected_false_merges: float = 0.01,
                          max_identities: int = MAX_IDENTITIES,
                          corpus_identities: int | None = None) -> SamePersonCalibration:
    """The centroid similarity at which two identities are one person on this corpus (None: merge nothing).
    `corpus_identities`: how many identities the corpus has when these are a sample of them (the bound counts
    every pair of the corpus)."""
    ident = np.asarray(identities)
    names = sorted(set(ident.tolist()))
    n = max(len(names), corpus_identities or 0)
    pairs = n * (n - 1) // 2
    keep = sampled_names(names, max_identities)
    rows = np.flatnonzero(np.isin(ident, keep))
    halves = half_similarities(ident[rows], np.asarray(embeddings)[rows])
    _, cent = centroids(ident[rows], np.asarray(embeddings)[rows])
    sims = (cent @ cent.T)[np.triu_indices(len(keep), 1)] if len(keep) > 1 else np.zeros(0)

    def record(threshold: float | None, separable: bool, same: float | None, bound: float | None,
               reason: str) -> SamePersonCalibration:
        return SamePersonCalibration(threshold, separable, same, bound, float(sims.max()) if len(sims) else None,
                                     frr, expected_false_merges, n, len(halves), pairs, len(sims), reason)

    if len(halves) == 0:
        return record(None, False, None, None, "no identity has two photos (no same-person similarity to learn)")
    if len(sims) < _MIN_PAIRS:
        return record(None, False, None, None, f"{n} identities: too few different-person pairs to fit")
    same = float(np.sort(halves)[min(int(np.floor(frr * len(halves))), len(halves) - 1)])
    bound = different_pair_bound(sims, pairs, expected_false_merges)
    if bound is None:
        return record(None, False, same, None, "every different-person pair scores the same: nothing to fit")
    separable = bound < same
    return record(same if separable else None, separable, same, bound, "")


def merged_groups(identities: list[str] | np.ndarray, embeddings: np.ndarray,
                  threshold: float | None) -> list[list[str]]:
    """The groups of two or more identities whose centroids are joined by cosine >= threshold (connected
    components; the planner's clustering rule), each sorted, in order of their first name."""
    names, cent = centroids(identities, embeddings)
    if threshold is None or len(names) < 2:
        return []
    parent = list(range(len(names)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a0 in range(0, len(names), _BLOCK):  # a block of rows at a time: bounded memory on many identities
        sim = cent[a0:a0 + _BLOCK] @ cent.T
        for a, b in zip(*np.nonzero(sim >= threshold), strict=True):
            if a0 + a < b:
                ra, rb = find(int(a0 + a)), find(int(b))
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[str]] = {}
    for k, name in enumerate(names):
        groups.setdefault(find(k), []).append(name)
    return [g for _, g in sorted(groups.items()) if len(g) > 1]
