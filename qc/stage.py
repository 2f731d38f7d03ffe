"""The QC stage: score every candidate R against T, the carrier and j, then decide with thresholds from config.

Scores (every one a column): identity (cosine R-T, R-j, gallery margins over i and over every other identity
of the run), expression (landmark descriptor distance R-T; learned 7-class probabilities of R, T and the
carrier, their total-variation distances, R's gain over the carrier and R's contrast on the axis from S's
expression to T's), mouth (open/closed, teeth, lip-line whiteness, seam, sharpness, realism against the run's
real mouths, artifacts beyond the carrier's mouth) and image sharpness. Identity thresholds left null in config
are calibrated from the run's sources (qc/identity_calibration.py), mouth thresholds on the sources' real mouths
(qc/mouth_calibration.py); the thresholds applied are recorded per row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from core.faults import maybe_inject
from manifests.artifacts import ArtifactStore
from manifests.schemas import QC_FIELDS
from manifests.store import ManifestStore
from qc.config import QCConfig
from qc.decide import ACCEPTED, SCORE_COLUMNS, Scores, failed_checks
from qc.expression_calibration import photo_features
from qc.expression_score import expression_scores
from qc.identity import cosine_similarity
from qc.identity_gallery import IdentityGallery
from qc.mouth import mouth_aspect, mouth_scores, teeth_share
from qc.mouth_detector import detector_inputs
from qc.mouth_realism import CanonicalMouth, canonical_mouth, lip_line_profile, mouth_descriptor, mouth_shape
from qc.mouth_reference import reference_features
from qc.run_thresholds import RUN_THRESHOLD_COLUMNS, identity_expression_means, resolve_run_thresholds
from stages.base import STATUS_OK, Stage, rows_to_table, stage_error
from stages.face.backends import build_detector, build_embedder
from stages.face.expression import expression_descriptor, expression_distance
from stages.face.expression_net import labels_or_predicted
from stages.face.learned_expression import LearnedExpression
from stages.face.quality import sharpness
from stages.face.types import largest_face

log = logging.getLogger(__name__)

_SCORE_NULLS = {f.name: None for f in QC_FIELDS if f.name not in ("accepted", "reason", "reasons")}


# Per-actor caches of source images' measures hold at most this many entries (then start again).
CACHE_ENTRIES = 4096
_Measure = TypeVar("_Measure")


def remembered(cache: dict[str, _Measure], key: str, measure: Callable[[], _Measure]) -> _Measure:
    """cache[key], measured once; the cache is emptied when it holds CACHE_ENTRIES."""
    if key not in cache:
        if len(cache) >= CACHE_ENTRIES:
            cache.clear()
        cache[key] = measure()
    return cache[key]


class QCStage(Stage):
    name = "qc"
    input_columns = ("reference_path", "t_embedding", "j_embedding", "t_descriptor", "t_aligned_path",
                     "t_landmarks68", "s_aligned_path", "s_landmarks68", "carrier_aligned_path", "carrier_landmarks68",
                     "mouth_aligned_path", "mouth_landmarks68", "transfer_mouth_rule", "identity_i", "identity_j",
                     "expression", "status", "reject_reason")
    output_fields = QC_FIELDS

    config_section = "qc"
    config: QCConfig

    def setup(self) -> None:
        self.detector = build_detector(self.context.ingest, self.context.models)
        self.embedder = build_embedder(self.config.identity, self.context.models)
        self.expression = LearnedExpression()
        self.artifacts = ArtifactStore(self.context.run)
        sources = ManifestStore.open(self.context.run).read_table("sources", list(RUN_THRESHOLD_COLUMNS))
        self.gallery = IdentityGallery.from_sources(sources)
        resolved = resolve_run_thresholds(self.config, sources, self.artifacts.get)
        self.thresholds, self.calibration = resolved.thresholds, resolved.expression
        self.mouth_bank = resolved.mouth.bank if resolved.mouth is not None else None
        self.reference_null = resolved.mouth.reference if resolved.mouth is not None else None
        self.damage_detector = resolved.mouth.detector if resolved.mouth is not None else None
        self._reference_cache: dict[str, np.ndarray] = {}  # mouth origin's aligned path -> its reference features
        self.expression_means = identity_expression_means(sources) if self.calibration else {}
        self.thresholds_json = self.thresholds.to_json()
        self._cache: dict[str, tuple[np.ndarray, float, float]] = {}  # aligned path -> (probs, aspect, teeth)

    def _source_scores(self, path: str, landmarks: list[float]) -> tuple[np.ndarray, float, float]:
        """T's, S's or the carrier's expression probabilities, mouth aspect and teeth share (cached per actor)."""
        def measure() -> tuple[np.ndarray, float, float]:
            rgb = self.artifacts.get(path)
            lm = np.asarray(landmarks, np.float32).reshape(68, 2)
            return self.expression.probabilities([rgb], [lm])[0], mouth_aspect(lm), teeth_share(rgb, lm)
        return remembered(self._cache, path, measure)

    def _against_mouth_origin(self, row: dict[str, Any], r_rgb: np.ndarray, r_landmarks: np.ndarray, ms: Any,
                         r_mouth: np.ndarray | None,
                         r_canonical: CanonicalMouth | None) -> tuple[float | None, float | None]:
        """(reference diff, damage score): R's mouth against the mouth it was made from (qc/mouth_reference.py) and
        the run's damage detector (qc/mouth_detector.py; r_mouth: R's mouth descriptor, r_canonical: R's canonical
        mouth); None where a check is off or R has no carrier. The mouth R was made from is the carrier's, or j's
        mouth donor's where the transfer took the donor's (transfer_mouth_rule donor_mouth)."""
        role = "mouth" if row.get("transfer_mouth_rule") == "donor_mouth" else "carrier"
        path, lm = row.get(f"{role}_aligned_path"), row.get(f"{role}_landmarks68")
        detector = self.damage_detector if self.mouth_bank is not None and r_mouth is not None else None
        if (self.reference_null is None and detector is None) or not path or not lm:
            return None, None
        carrier = remembered(self._reference_cache, path, lambda: reference_features(
            self.artifacts.get(path), np.asarray(lm, np.float32).reshape(68, 2)))
        r_ref = reference_features(r_rgb, r_landmarks, r_canonical)
        diff = None if self.reference_null is None else self.reference_null.score(r_ref, carrier)
        if detector is None or self.mouth_bank is None or r_mouth is None:
            return diff, None
        dev = self.mouth_bank.signed_deviation(r_mouth, mouth_shape(r_landmarks), (row["identity_i"],
                                                                                  row["identity_j"]))
        inputs = detector_inputs(dev, r_ref - carrier, ms.mouth_aspect, ms.teeth_share, ms.lip_line_whiteness,
                                 ms.seam_score, ms.sharpness_ratio, lip_line_profile(r_rgb, r_landmarks, r_canonical))
        return diff, float(detector.scores(inputs)[0])

    def score(self, row: dict[str, Any]) -> tuple[Scores, dict[str, Any]]:
        r_rgb = self.artifacts.get(row["reference_path"])
        face = largest_face(self.detector.detect(r_rgb))
        if face is None or face.landmarks68 is None:
            return Scores(face_found=False, sharpness=sharpness(r_rgb)), {}
        emb = self.embedder.embed(r_rgb, face)
        i, j = row["identity_i"], row["identity_j"]
        gallery = self.gallery.with_identity(i, row["t_embedding"]).with_identity(j, row["j_embedding"])
        gm = gallery.margins(emb, i, j)
        t_probs, t_aspect, t_teeth = self._source_scores(row["t_aligned_path"], row["t_landmarks68"])
        c_probs = None
        if row.get("carrier_aligned_path") and row.get("carrier_landmarks68"):
            c_probs = self._source_scores(row["carrier_aligned_path"], row["carrier_landmarks68"])[0]
        s_probs = None
        if row.get("s_aligned_path") and row.get("s_landmarks68"):
            s_probs = self._source_scores(row["s_aligned_path"], row["s_landmarks68"])[0]
        r_probs = self.expression.probabilities([r_rgb], [face.landmarks68])[0]
        ex = expression_scores(self.expression, r_probs, t_probs, c_probs, s_probs)
        ms = mouth_scores(r_rgb, face.landmarks68)
        r_descriptor = expression_descriptor(face.landmarks68)
        expr_class = labels_or_predicted([row.get("expression")], [list(t_probs)])[0]
        class_score = None
        if self.calibration is not None and expr_class is not None:
            features = photo_features(np.asarray([r_probs]), np.asarray([r_descriptor]))[0]
            class_score = self.calibration.score(features, self.expression_means.get(j), expr_class)
        # R's mouth warped once for every mouth measure that is on (realism, reference, damage)
        mouth_checks = self.mouth_bank is not None or self.reference_null is not None
        r_canonical = canonical_mouth(r_rgb, face.landmarks68) if mouth_checks else None
        r_mouth = None if self.mouth_bank is None else mouth_descriptor(r_rgb, face.landmarks68,
                                                                         self.mouth_bank.use_chroma, r_canonical)
        realism = None if self.mouth_bank is None or r_mouth is None else self.mouth_bank.score(
            r_mouth, mouth_shape(face.landmarks68), exclude=(i, j))
        reference_diff, damage = self._against_mouth_origin(row, r_rgb, face.landmarks68, ms, r_mouth, r_canonical)
        scores = Scores(
            face_found=True, id_sim_rt=cosine_similarity(emb, row["t_embedding"]),
            id_sim_rj=cosine_similarity(emb, row["j_embedding"]),
            expr_dist_rt=expression_distance(r_descriptor, row["t_descriptor"]),
            sharpness=sharpness(r_rgb), id_margin_ji=gm.margin_ji, id_margin_j=gm.margin_j,
            expr_prob_dist_rt=ex.dist_rt, expr_prob_dist_ct=ex.dist_ct, expr_prob_dist_rc=ex.dist_rc,
            expr_gain=ex.gain, expr_contrast_st=ex.contrast_st, r_mouth_aspect=ms.mouth_aspect,
            t_mouth_aspect=t_aspect, r_teeth=ms.teeth_share, t_teeth=t_teeth, r_lip_line=ms.lip_line_whiteness,
            mouth_seam=ms.seam_score, mouth_sharpness_ratio=ms.sharpness_ratio, expr_class=expr_class,
            expr_class_score=class_score, mouth_realism=realism,
            mouth_reference_diff=reference_diff, mouth_damage=damage, mouth_tint=ms.tint)
        extra = dict(id_nearest_other=gm.nearest_other, r_expr_probs=ex.r_probs, t_expr_probs=ex.t_probs,
                     carrier_expr_probs=ex.carrier_probs, s_expr_probs=ex.s_probs, r_expr_label=ex.r_label,
                     t_expr_label=ex.t_label, carrier_expr_label=ex.carrier_label)
        return scores, extra

    def decide(self, row: dict[str, Any]) -> dict[str, Any]:
        base = dict(_SCORE_NULLS, identity_backend=self.config.identity.backend,
                    identity_model=self.embedder.model_id, identity_model_sha256=self.embedder.model_sha256,
                    expression_net_model=self.expression.model_id, expression_net_sha256=self.expression.model_sha256,
                    thresholds=self.thresholds_json, decision_version=0)
        if row.get("status") != STATUS_OK:
            reason = row.get("reject_reason") or "rejected_upstream"
            return dict(base, accepted=False, reason=reason, reasons=[reason])
        try:
            maybe_inject(self.context.fault, self.name, row.get("candidate_id"),  # testing hook
                         row.get("attempt"))
            s, extra = self.score(row)
        except Exception as exc:  # noqa: BLE001 - a QC model failure on one item is a reject row
            log.warning("qc failed on %s: %s", row.get("candidate_id"), exc)
            row.update(stage_error(self.name, exc))
            return dict(base, accepted=False, reason="stage_error", reasons=["stage_error"])
        reasons = failed_checks(s, self.thresholds)
        return dict(base, **{n: getattr(s, n) for n in SCORE_COLUMNS}, **extra, accepted=not reasons,
                    reason=reasons[0] if reasons else ACCEPTED, reasons=reasons)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for row in rows:
            row.update(self.decide(row))
        return rows_to_table(rows, batch.schema, pa.schema(list(QC_FIELDS)))
