"""The gallery margin (qc.identity.min_margin) calibrated from the run's own sources.

A good R is a photo of j. The gallery test (qc/identity_gallery.py) rejects R when j's centroid does not beat
every other identity's (i's included) by the margin, so on *real* photos of j it rejects exactly those whose
margin_j = sim(R, c_j) - max_{k != j} sim(R, c_k) is below it. Each real photo of an identity with two or more
photos is scored leave-one-out (c_j without that photo: with it the margin is optimistic). The unit that is
exchangeable is the identity, not the photo (a person's photos are alike, and a run judges many R of each j), so
the calibration is split-conformal over identities: each identity's worst real photo (its smallest margin), and
the margin is the k-th smallest of those, k = floor(max_false_reject * (identities + 1)). A new identity's worst
real photo then falls below it with probability <= max_false_reject, and so does any of its photos. Never below 0
(a negative margin would accept an R nearer to another identity than to j): with fewer than
1 / max_false_reject - 1 identities nothing can be certified and the margin is 0 (the most lenient); when even 0
rejects more than the target, the record says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

MAX_PHOTOS = 4000  # real photos scored (a deterministic sample on a large corpus)
FALLBACK_MARGIN = 0.02  # when there is nothing to calibrate from (no identity with two photos)
_ROWS = 256  # photos scored against every centroid at once


@dataclass(frozen=True)
class MarginCalibration:
    min_margin: float
    max_false_reject: float
    false_reject: float  # share of the scored real photos of j the margin rejects (in sample)
    quantile: float  # the k-th smallest of the identities' worst leave-one-out margins (< 0, or -inf: none)
    photos: int  # real photos scored
    identities: int  # identities whose photos were scored (the conformal sample)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        text = (f"min_margin {self.min_margin:.4f}: rejects {100 * self.false_reject:.2f} % of {self.photos} real "
                f"photos of j (leave-one-out, target <= {100 * self.max_false_reject:g} %)")
        if self.quantile == float("-inf"):
            need = int(np.ceil(1 / self.max_false_reject)) - 1 if self.max_false_reject > 0 else 0
            text += (f"; {self.identities} identities cannot certify the target ({need} needed): margin 0, the most "
                     f"lenient")
        elif self.quantile < 0:
            text += (f"; even a margin of 0 rejects more than the target on this corpus (the embedder puts some "
                     f"real photos nearer another identity: margin quantile {self.quantile:.4f})")
        return text


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _sample(identities: np.ndarray, rows: np.ndarray, limit: int) -> np.ndarray:
    if len(rows) <= limit:
        return rows
    key = [hashlib.sha256(f"{identities[r]}/{r}".encode()).hexdigest() for r in rows]
    return np.sort(rows[np.argsort(key)[:limit]])


@dataclass(frozen=True)
class LooMargins:
    """Leave-one-out gallery scores of real photos: `rows` (into the inputs), their identity index, the
    similarity to their own identity's centroid without them, and to the nearest other identity's centroid."""

    names: list[str]
    centroids: np.ndarray  # (identities, d) unit gallery centroids, every photo included
    rows: np.ndarray
    own: np.ndarray  # identity index of each scored photo
    sim_own: np.ndarray  # sim(R, c_j without R)
    best_other: np.ndarray  # max over k != j of sim(R, c_k)

    def margin_j(self) -> np.ndarray:
        """sim(R, c_j) - max_{k != j} sim(R, c_k): the margin over the nearest other identity."""
        return self.sim_own - self.best_other


def _best_other(e: np.ndarray, own: np.ndarray, cent: np.ndarray) -> np.ndarray:
    """max over k != own of e @ cent[k], a block of photos at a time (never the whole photos x identities)."""
    out = np.empty(len(e))
    for k in range(0, len(e), _ROWS):
        s = e[k:k + _ROWS] @ cent.T
        s[np.arange(len(s)), own[k:k + _ROWS]] = -np.inf
        out[k:k + _ROWS] = s.max(axis=1)
    return out


def loo_margins(identities: list[str] | np.ndarray, embeddings: np.ndarray,
                max_photos: int = MAX_PHOTOS) -> LooMargins:
    """Every real photo of an identity with >= 2 photos (at most max_photos, a deterministic sample), scored
    against the gallery of the run's identities with its own identity's centroid left-one-out."""
    ident = np.asarray(identities)
    e = _unit(np.asarray(embeddings, np.float64))
    names, inverse, counts = np.unique(ident, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    sums = np.add.reduceat(e[order], np.searchsorted(inverse[order], np.arange(len(names))), axis=0) \
        if len(names) else np.zeros((0, e.shape[1] if e.ndim == 2 else 0))
    cent = _unit(sums)
    rows = _sample(ident, np.flatnonzero(counts[inverse] >= 2), max_photos) if len(names) > 1 else np.zeros(0, int)
    own = inverse[rows]
    sim_own = np.einsum("ij,ij->i", e[rows], _unit(sums[own] - e[rows]))
    return LooMargins([str(n) for n in names], cent, rows, own, sim_own, _best_other(e[rows], own, cent))


def margin_at(worst: np.ndarray, max_false_reject: float) -> tuple[float, float]:
    """(min_margin, the k-th smallest of `worst`, k = floor(max_false_reject * (n + 1))): the conformal quantile of
    the identities' worst margins, so that a new identity's worst real photo falls below min_margin with probability
    <= max_false_reject. Never below 0; with too few identities to certify the target (k = 0) it is 0 and the
    quantile -inf."""
    m = np.sort(np.asarray(worst, np.float64))
    k = int(np.floor(max_false_reject * (len(m) + 1)))
    q = float(m[min(k, len(m)) - 1]) if k >= 1 else float("-inf")
    return max(0.0, q), q


def calibrate_margin(identities: list[str] | np.ndarray, embeddings: np.ndarray,
                     max_false_reject: float = 0.01) -> MarginCalibration | None:
    """None when no real photo can be scored (fewer than two identities, or none with two photos)."""
    loo = loo_margins(identities, embeddings)
    if not len(loo.rows):
        return None
    m = loo.margin_j()
    value, q = margin_at(worst_per_identity(loo.own, m), max_false_reject)
    return MarginCalibration(value, max_false_reject, float(np.mean(m < value)), q, len(m),
                             len(np.unique(loo.own)))


def worst_per_identity(identity_of: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """Each identity's smallest margin (identities in sorted order)."""
    identity_of, margins = np.asarray(identity_of), np.asarray(margins, np.float64)
    order = np.argsort(identity_of, kind="stable")
    _, starts = np.unique(identity_of[order], return_index=True)
    return np.minimum.reduceat(margins[order], starts) if len(margins) else np.zeros(0)


def held_out_false_reject(identity_of: np.ndarray, margins: np.ndarray, max_false_reject: float) -> float:
    """Out of sample: each identity's real photos judged by the margin calibrated on every other identity's
    photos (leave-one-identity-out); the share of all photos rejected."""
    identity_of, margins = np.asarray(identity_of), np.asarray(margins, np.float64)
    failed = 0
    for ident in np.unique(identity_of):
        mine = identity_of == ident
        if (~mine).any():
            value = margin_at(worst_per_identity(identity_of[~mine], margins[~mine]), max_false_reject)[0]
            failed += int(np.sum(margins[mine] < value))
    return failed / max(1, len(margins))
