"""Turn QC scores into accept/reject with one reason code per failed check, thresholds from config."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from qc.config import QCConfig

# Fixed order: the first failed check is the row's primary `reason`.
REASON_NO_FACE = "qc_no_face"
REASON_BLURRY = "qc_blurry"
REASON_IDENTITY_LEAK = "identity_leak"
REASON_SWAP_FAILED = "swap_failed"
REASON_EXPRESSION_LOST = "expression_lost"
ACCEPTED = "accepted"


@dataclass(frozen=True)
class Thresholds:
    max_leak_similarity: float
    min_swap_similarity: float
    max_expression_distance: float
    min_sharpness: float
    identity_backend: str

    @classmethod
    def from_config(cls, qc: QCConfig) -> Thresholds:
        return cls(qc.identity.max_leak_similarity, qc.identity.min_swap_similarity,
                   qc.expression.max_distance, qc.quality.min_sharpness, qc.identity.backend)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Scores:
    face_found: bool
    id_sim_rt: float | None = None
    id_sim_rj: float | None = None
    expr_dist_rt: float | None = None
    sharpness: float | None = None


def failed_checks(s: Scores, t: Thresholds) -> list[str]:
    if not s.face_found:
        return [REASON_NO_FACE]
    reasons = []
    if s.sharpness is not None and s.sharpness < t.min_sharpness:
        reasons.append(REASON_BLURRY)
    if s.id_sim_rt is not None and s.id_sim_rt > t.max_leak_similarity:
        reasons.append(REASON_IDENTITY_LEAK)
    if s.id_sim_rj is not None and s.id_sim_rj < t.min_swap_similarity:
        reasons.append(REASON_SWAP_FAILED)
    if s.expr_dist_rt is not None and s.expr_dist_rt > t.max_expression_distance:
        reasons.append(REASON_EXPRESSION_LOST)
    return reasons
