"""The QC stage: score every candidate R against T and j, then decide with thresholds from config."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pyarrow as pa

from core.faults import maybe_inject
from manifests.artifacts import ArtifactStore
from manifests.schemas import QC_FIELDS
from qc.config import QCConfig
from qc.decide import ACCEPTED, Scores, Thresholds, failed_checks
from qc.identity import cosine_similarity
from stages.base import STATUS_OK, TRANSIENT_COLUMN, Stage, rows_to_table
from stages.errors import is_transient
from stages.face.backends import build_detector, build_embedder
from stages.face.expression import expression_descriptor, expression_distance
from stages.face.quality import sharpness
from stages.identity_swap import largest_face

log = logging.getLogger(__name__)

class QCStage(Stage):
    name = "qc"
    input_columns = ("reference_path", "t_embedding", "j_embedding", "t_descriptor", "status", "reject_reason")
    output_fields = QC_FIELDS

    config_section = "qc"
    config: QCConfig

    def setup(self) -> None:
        self.detector = build_detector(self.context.detector, self.context.models)
        self.embedder = build_embedder(self.config.identity, self.context.models)
        self.artifacts = ArtifactStore(self.context.run)
        self.thresholds = Thresholds.from_config(self.config)
        self.thresholds_json = self.thresholds.to_json()

    def score(self, row: dict[str, Any]) -> Scores:
        r_rgb = self.artifacts.get(row["reference_path"])
        face = largest_face(self.detector.detect(r_rgb))
        if face is None:
            return Scores(face_found=False, sharpness=sharpness(r_rgb))
        emb = self.embedder.embed(r_rgb, face)
        expr = expression_distance(expression_descriptor(face.landmarks68), row["t_descriptor"]) \
            if face.landmarks68 is not None else None
        return Scores(face_found=True,
                      id_sim_rt=cosine_similarity(emb, row["t_embedding"]),
                      id_sim_rj=cosine_similarity(emb, row["j_embedding"]),
                      expr_dist_rt=expr,
                      sharpness=sharpness(r_rgb))

    def decide(self, row: dict[str, Any]) -> dict[str, Any]:
        base = dict(identity_backend=self.config.identity.backend, identity_model=self.embedder.model_id,
                    identity_model_sha256=self.embedder.model_sha256, thresholds=self.thresholds_json)
        if row.get("status") != STATUS_OK:
            reason = row.get("reject_reason") or "rejected_upstream"
            return dict(base, accepted=False, reason=reason, reasons=[reason], face_found=None,
                        id_sim_rt=None, id_sim_rj=None, expr_dist_rt=None, sharpness=None)
        try:
            maybe_inject(self.context.fault, self.name, row.get("candidate_id"),  # testing hook
                         row.get("attempt"))
            s = self.score(row)
        except Exception as exc:  # noqa: BLE001 - a QC model failure on one item is a reject row
            log.warning("qc failed on %s: %s", row.get("candidate_id"), exc)
            row.update(status="rejected", reject_stage=self.name, reject_reason="stage_error",
                       **{TRANSIENT_COLUMN: is_transient(exc)},
                       reject_detail=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"[:2000])
            return dict(base, accepted=False, reason="stage_error", reasons=["stage_error"], face_found=None,
                        id_sim_rt=None, id_sim_rj=None, expr_dist_rt=None, sharpness=None)
        reasons = failed_checks(s, self.thresholds)
        return dict(base, accepted=not reasons, reason=reasons[0] if reasons else ACCEPTED, reasons=reasons,
                    face_found=s.face_found, id_sim_rt=s.id_sim_rt, id_sim_rj=s.id_sim_rj,
                    expr_dist_rt=s.expr_dist_rt, sharpness=s.sharpness)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for row in rows:
            row.update(self.decide(row))
        return rows_to_table(rows, batch.schema, pa.schema(list(QC_FIELDS)))
