"""QC's config section: which identity model judges R, and the thresholds of every check."""

from __future__ import annotations

from pydantic import Field

from core.config import StageResources, Strict
from stages.face.backends import IdentityModelConfig


class IdentityQCConfig(IdentityModelConfig):
    """Which identity model QC (and ingest) embed with, and the identity thresholds."""

    # cosine similarities; R must not look like T's identity and must look like the swap source.
    # dlib defaults from the London set (`ciep calibrate-identity`): different people p99 0.916, same person
    # min 0.953. ArcFace scores are on another scale: calibrate before changing backend.
    max_leak_similarity: float = Field(0.92, ge=-1, le=1)
    min_swap_similarity: float = Field(0.95, ge=-1, le=1)


class ExpressionQCConfig(Strict):
    max_distance: float = Field(0.12, gt=0)


class QualityQCConfig(Strict):
    min_sharpness: float = Field(20.0, ge=0)  # variance of the Laplacian on the aligned grey face


class QCConfig(Strict):
    identity: IdentityQCConfig = IdentityQCConfig()
    expression: ExpressionQCConfig = ExpressionQCConfig()
    quality: QualityQCConfig = QualityQCConfig()
    resources: StageResources = StageResources()
