"""Calibrate the identity threshold: same- vs different-identity cosine similarities on a labelled corpus.

`ciep calibrate-identity --config C --corpus DIR --far 0.01` (pipeline/cli.py) embeds the largest face of every image in
DIR/<identity>/<image> with the configured detector and embedder, scores every same-identity pair
(genuine) and every cross-identity pair (impostor), and reports the similarity threshold at which the
chosen share of impostor pairs is accepted (score >= threshold), the genuine accept rate there,
medians, percentiles, counts and the equal error rate.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from core.location import Location
from qc.config import QCConfig
from qc.identity_calibration import calibrate_from_embeddings
from stages.config import CorpusConfig, IngestConfig, ModelsConfig
from stages.corpus import list_corpus
from stages.face.backends import build_detector, build_embedder

log = logging.getLogger(__name__)

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


class CalibrationSections(Protocol):
    """The config sections calibration reads (a PipelineConfig has them all)."""

    @property
    def corpus(self) -> CorpusConfig: ...
    @property
    def ingest(self) -> IngestConfig: ...
    @property
    def qc(self) -> QCConfig: ...
    @property
    def models(self) -> ModelsConfig: ...


@dataclass
class CalibrationResult:
    embedder: str  # backend:model id
    embedder_sha256: str
    detector: str
    far_target: float
    threshold: float  # accept as the same identity when cosine similarity >= threshold
    far: float  # impostor pairs accepted at the threshold
    tar: float  # genuine pairs accepted at the threshold
    eer: float
    eer_threshold: float
    identities: int
    images: int
    images_without_face: int
    genuine_pairs: int
    impostor_pairs: int
    genuine_median: float
    impostor_median: float
    genuine_percentiles: dict[str, float] = field(default_factory=dict)
    impostor_percentiles: dict[str, float] = field(default_factory=dict)
    # the QC threshold pair (qc/identity_calibration.py) at far / frr, or why there is none
    frr_target: float = 0.01
    separable: bool = True
    max_leak_similarity: float | None = None
    min_swap_similarity: float | None = None
    qc_thresholds: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        g, i = self.genuine_percentiles, self.impostor_percentiles
        rows = [
            f"embedder            {self.embedder} (sha256 {self.embedder_sha256[:12]})",
            f"detector            {self.detector}",
            f"corpus              {self.identities} identities, {self.images} images "
            f"({self.images_without_face} without a face)",
            f"pairs               {self.genuine_pairs} genuine, {self.impostor_pairs} impostor",
            f"threshold @FAR={self.far_target:g}   {self.threshold:.4f}  (FAR {self.far:.4f}, TAR {self.tar:.4f})",
            f"EER                 {self.eer:.4f} at {self.eer_threshold:.4f}",
            f"median              genuine {self.genuine_median:.4f}, impostor {self.impostor_median:.4f}",
            "percentile          " + "  ".join(f"p{k:>2}" + " " * 4 for k in PERCENTILES),
            "  genuine           " + "  ".join(f"{g[f'p{k}']:.4f}" for k in PERCENTILES),
            "  impostor          " + "  ".join(f"{i[f'p{k}']:.4f}" for k in PERCENTILES),
            f"QC thresholds       {self.qc_thresholds}",
        ]
        return "\n".join(rows)


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Smallest threshold with share(impostor >= threshold) <= far (ties counted as accepted)."""
    desc = np.sort(np.asarray(impostor, np.float64))[::-1]
    k = int(np.floor(far * len(desc)))
    if k >= len(desc):
        return float(desc[-1])
    return float(np.nextafter(desc[k], np.inf))


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) where false accepts and false rejects are closest."""
    candidates = np.unique(np.concatenate([genuine, impostor]))
    far = np.array([(impostor >= t).mean() for t in candidates])
    frr = np.array([(genuine < t).mean() for t in candidates])
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2), float(candidates[k])


def _percentiles(x: np.ndarray) -> dict[str, float]:
    return {f"p{k}": float(v) for k, v in zip(PERCENTILES, np.percentile(x, PERCENTILES), strict=False)}


def _read_rgb(corpus: Location, url: str, max_pixels: int) -> np.ndarray | None:
    """The image at `url`, read with the corpus's storage options (None if it does not decode)."""
    from stages.face.image_io import ImageRejected, decode_image

    with corpus.open_url(url) as fh:
        data = fh.read()
    try:
        return decode_image(data, max_pixels)
    except ImageRejected:
        return None


def calibrate_identity(cfg: CalibrationSections, corpus_root: str, far: float = 0.01,
                       frr: float = 0.01) -> CalibrationResult:
    """Genuine/impostor similarity distributions and the threshold at `far` for build_embedder(cfg)."""
    if not 0 <= far < 1:
        raise ValueError("far must be in [0, 1)")
    corpus_cfg = cfg.corpus.model_copy(update={"root": corpus_root, "index": None})
    listing = list_corpus(corpus_cfg).items
    corpus_files = corpus_cfg.location  # built once: every image is read with the corpus's options
    corpus: dict[str, list[str]] = {}
    for identity, path in zip(listing["identity"].to_pylist(), listing["path"].to_pylist(), strict=False):
        corpus.setdefault(identity, []).append(path)
    if len(corpus) < 2:
        raise ValueError(f"{corpus_root}: need at least two identity folders with images, found {len(corpus)}")
    detector = build_detector(cfg.ingest, cfg.models)
    embedder = build_embedder(cfg.qc.identity, cfg.models)
    labels: list[str] = []
    embeddings: list[np.ndarray] = []
    missing = 0
    for identity, paths in corpus.items():
        for path in paths:
            rgb = _read_rgb(corpus_files, path, cfg.ingest.max_pixels)
            faces = detector.detect(rgb) if rgb is not None else []
            if rgb is None or not faces:
                missing += 1
                log.info("no face in %s", path)
                continue
            face = max(faces, key=lambda f: f.short_side)
            emb = np.asarray(embedder.embed(rgb, face), np.float64)
            embeddings.append(emb / np.linalg.norm(emb))
            labels.append(identity)
    if not embeddings:
        raise ValueError(f"{corpus_root}: no face found in any image")
    e = np.stack(embeddings)
    sims = e @ e.T
    genuine: list[float] = []
    impostor: list[float] = []
    for a, b in itertools.combinations(range(len(labels)), 2):
        (genuine if labels[a] == labels[b] else impostor).append(sims[a, b])
    g, i = np.asarray(genuine), np.asarray(impostor)
    if not len(g) or not len(i):
        raise ValueError(f"{corpus_root}: need identities with 2+ usable images and 2+ identities")
    t = threshold_at_far(i, far)
    eer, eer_t = equal_error_rate(g, i)
    pair = calibrate_from_embeddings(labels, e, far, frr)
    assert pair is not None  # g and i are non-empty
    return CalibrationResult(
        embedder=f"{cfg.qc.identity.backend}:{embedder.model_id}", embedder_sha256=embedder.model_sha256,
        detector=detector.model_id, far_target=far, threshold=t, far=float((i >= t).mean()),
        tar=float((g >= t).mean()), eer=eer, eer_threshold=eer_t, identities=len(set(labels)),
        images=sum(len(p) for p in corpus.values()), images_without_face=missing, genuine_pairs=len(g),
        impostor_pairs=len(i), genuine_median=float(np.median(g)), impostor_median=float(np.median(i)),
        genuine_percentiles=_percentiles(g), impostor_percentiles=_percentiles(i), frr_target=frr,
        separable=pair.separable, max_leak_similarity=pair.max_leak_similarity,
        min_swap_similarity=pair.min_swap_similarity, qc_thresholds=pair.describe())

