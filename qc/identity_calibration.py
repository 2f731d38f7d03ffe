"""Leak/swap thresholds calibrated from a run's own sources: same- vs different-identity similarities.

Two quantiles of the run's sources: q_diff, the similarity that only `far` of different-identity pairs reach,
and q_same, the similarity that `frr` of same-identity pairs fall below. When q_diff < q_same the corpus is
separable and R is judged on that scale: max_leak_similarity = q_same (R as similar to T as photos of one
person are: a leak), min_swap_similarity = q_diff (R no more similar to j than strangers are: the swap
failed). When q_diff >= q_same no pair of absolute thresholds separates the corpus: both absolute checks are
off and the gallery margin test (qc/identity_gallery.py) decides alone. The gallery margin itself is calibrated
on the run's real photos (qc/identity_margin.py). Explicit config values override.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace

import numpy as np
import pyarrow as pa

from manifests.store import ManifestStore
from qc.config import QCConfig
from qc.decide import Thresholds
from qc.identity_margin import FALLBACK_MARGIN, MarginCalibration, calibrate_margin

# Different-identity pairs are sampled from at most this many sources (deterministically), so calibration
# stays cheap on a large corpus.
MAX_SOURCES_FOR_IMPOSTORS = 2000


@dataclass(frozen=True)
class IdentityCalibration:
    max_leak_similarity: float | None  # None: no separating pair, absolute checks off
    min_swap_similarity: float | None
    separable: bool
    different_quantile: float  # different-identity similarity reached by `far` of the pairs
    same_quantile: float  # same-identity similarity that `frr` of the pairs fall below
    far: float
    frr: float
    identities: int
    genuine_pairs: int
    impostor_pairs: int

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if not self.separable:
            return (f"NO threshold pair separates this corpus: {self.far:g} of different-identity pairs score "
                    f">= {self.different_quantile:.4f}, not below the similarity {self.frr:g} of same-identity "
                    f"pairs fall below ({self.same_quantile:.4f}); the absolute identity checks are off and the "
                    f"gallery margin test decides (qc.identity.min_margin)")
        return (f"max_leak_similarity {self.max_leak_similarity:.4f} (same-identity pairs below it: {self.frr:g}), "
                f"min_swap_similarity {self.min_swap_similarity:.4f} (different-identity pairs at or above it: "
                f"{self.far:g})")


def threshold_pair(genuine: np.ndarray, impostor: np.ndarray, far: float, frr: float) -> tuple[float, float, bool]:
    """(q_diff, q_same, separable): share(impostor >= q_diff) <= far, share(genuine < q_same) <= frr."""
    imp = np.sort(np.asarray(impostor, np.float64))[::-1]
    k = int(np.floor(far * len(imp)))
    q_diff = float(np.nextafter(imp[min(k, len(imp) - 1)], np.inf))
    gen = np.sort(np.asarray(genuine, np.float64))
    q_same = float(gen[min(int(np.floor(frr * len(gen))), len(gen) - 1)])
    return q_diff, q_same, q_diff < q_same


def pair_similarities(identities: list[str], embeddings: np.ndarray,
                      max_sources: int = MAX_SOURCES_FOR_IMPOSTORS) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosine similarities; impostors from a deterministic sample of sources."""
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    ident = np.asarray(identities)
    genuine = []
    for name in np.unique(ident):
        g = e[ident == name]
        if len(g) > 1:
            s = g @ g.T
            genuine.append(s[np.triu_indices(len(g), 1)])
    if len(e) > max_sources:
        order = sorted(range(len(e)), key=lambda k: hashlib.sha256(f"{ident[k]}/{k}".encode()).hexdigest())
        keep = np.asarray(order[:max_sources])
        e, ident = e[keep], ident[keep]
    s = e @ e.T
    iu = np.triu_indices(len(e), 1)
    diff = ident[iu[0]] != ident[iu[1]]
    return (np.concatenate(genuine) if genuine else np.zeros(0)), s[iu][diff]


def calibrate_from_embeddings(identities: list[str], embeddings: np.ndarray, far: float,
                              frr: float) -> IdentityCalibration | None:
    """None when the sources have no same-identity or no different-identity pair."""
    genuine, impostor = pair_similarities(identities, embeddings)
    if not len(genuine) or not len(impostor):
        return None
    q_diff, q_same, ok = threshold_pair(genuine, impostor, far, frr)
    return IdentityCalibration(q_same if ok else None, q_diff if ok else None, ok, q_diff, q_same, far, frr,
                               len(set(identities)), len(genuine), len(impostor))


def calibrate_from_sources(sources: pa.Table, far: float, frr: float) -> IdentityCalibration | None:
    if sources.num_rows == 0:
        return None
    return calibrate_from_embeddings(sources.column("identity").to_pylist(), source_embeddings(sources), far, frr)


def source_embeddings(sources: pa.Table) -> np.ndarray:
    """The (n, d) float64 matrix of a sources table's `embedding` column (rows of one embedder)."""
    col = sources.column("embedding")
    if not len(col):
        return np.zeros((0, 0))
    flat = pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
    return flat.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(col), -1)


@dataclass(frozen=True)
class IdentityResolution:
    """The identity thresholds QC applies, and the calibrations behind the null ones."""

    thresholds: Thresholds
    absolute: IdentityCalibration | None  # leak/swap pair (None: both explicit, or nothing to calibrate from)
    margin: MarginCalibration | None  # gallery margin (None: explicit, or nothing to calibrate from)


def _source_label(origins: dict[str, str]) -> str:
    kinds = set(origins.values())
    return kinds.pop() if len(kinds) == 1 else ",".join(f"{k}:{v}" for k, v in origins.items())


def resolve_identity(qc: QCConfig, sources: pa.Table) -> IdentityResolution:
    """Config values, with the null identity thresholds (leak, swap, gallery margin) calibrated from `sources`."""
    base = Thresholds.from_config(qc)
    idc = qc.identity
    origins = {"leak": "config", "swap": "config", "margin": "config"}
    ident = sources.column("identity").to_pylist() if sources.num_rows else []
    emb = source_embeddings(sources) if sources.num_rows else np.zeros((0, 0))
    cal = None
    leak, swap = idc.max_leak_similarity, idc.min_swap_similarity
    if leak is None or swap is None:
        cal = calibrate_from_embeddings(ident, emb, idc.calibration_far, idc.calibration_frr) if ident else None
        for key, value in (("leak", leak), ("swap", swap)):
            if value is None:
                origins[key] = "calibrated" if cal is not None else "uncalibrated"
        if cal is not None:
            leak = leak if leak is not None else cal.max_leak_similarity
            swap = swap if swap is not None else cal.min_swap_similarity
    margin_cal, margin = None, base.min_identity_margin
    if idc.min_margin is None:
        margin_cal = calibrate_margin(ident, emb, idc.margin_max_false_reject) if ident else None
        origins["margin"] = "calibrated" if margin_cal is not None else "uncalibrated"
        margin = margin_cal.min_margin if margin_cal is not None else FALLBACK_MARGIN
    thresholds = replace(base, max_leak_similarity=leak, min_swap_similarity=swap, min_identity_margin=margin,
                         identity_thresholds_source=_source_label(origins))
    return IdentityResolution(thresholds, cal, margin_cal)


def resolve_thresholds(qc: QCConfig, sources: pa.Table) -> tuple[Thresholds, IdentityCalibration | None]:
    """The thresholds QC applies: config values, with null identity thresholds calibrated from `sources`."""
    resolved = resolve_identity(qc, sources)
    return resolved.thresholds, resolved.absolute


def identity_calibration_record(qc_cfg: QCConfig, store: ManifestStore) -> dict:
    """What run.json records: the identity thresholds QC applies to this run and where they come from."""
    resolved = resolve_identity(qc_cfg, store.read_table("sources", ["identity", "embedding"]))
    thresholds, cal, margin = resolved.thresholds, resolved.absolute, resolved.margin
    return dict(max_leak_similarity=thresholds.max_leak_similarity,
                min_swap_similarity=thresholds.min_swap_similarity, min_margin=thresholds.min_identity_margin,
                source=thresholds.identity_thresholds_source, calibration=cal.to_dict() if cal else None,
                note=cal.describe() if cal else None, margin_calibration=margin.to_dict() if margin else None,
                margin_note=margin.describe() if margin else None)
