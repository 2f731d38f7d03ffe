"""Identity swap: replace the face in the expression-transferred image with swap-source j's face."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from manifests.artifacts import ArtifactStore
from pipeline.config import StageResources
from stages.base import RowRejected, RowwiseStage
from stages.face.backends import build_detector, build_swapper
from stages.face.types import DetectedFace, keypoints5_from_68
from stages.pairing import landmarks_array


def face_from_landmarks(lm68: np.ndarray) -> DetectedFace:
    """A DetectedFace for a crop whose 68 landmarks are already known."""
    x0, y0 = lm68.min(axis=0)
    x1, y1 = lm68.max(axis=0)
    return DetectedFace(box=np.array([x0, y0, x1, y1], np.float32), score=1.0,
                        keypoints5=keypoints5_from_68(lm68), landmarks68=lm68.astype(np.float32))


def largest_face(faces: list[DetectedFace]) -> DetectedFace | None:
    return max(faces, key=lambda f: f.short_side) if faces else None


class IdentitySwapStage(RowwiseStage):
    name = "identity_swap"
    input_columns = ("candidate_id", "transfer_path", "swap_aligned_path", "swap_landmarks68", "t_landmarks68")
    output_fields = (
        pa.field("swap_backend", pa.string()),
        pa.field("swap_model", pa.string()),
        pa.field("swap_model_sha256", pa.string()),
        pa.field("reference_path", pa.string()),
        pa.field("reference_sha256", pa.string()),
        pa.field("swap_target_face", pa.string()),  # "detected", or "target_landmarks" (see process_row)
    )

    @property
    def resources(self) -> StageResources:
        return self.config.identity_swap.resources

    def setup(self) -> None:
        self.swapper = build_swapper(self.config)
        self.detector = build_detector(self.config)
        self.artifacts = ArtifactStore(self.run_root, dict(self.config.run.storage_options))

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        target = self.artifacts.get(row["transfer_path"])
        target_face = largest_face(self.detector.detect(target))
        how = "detected"
        if target_face is None or target_face.landmarks68 is None:
            # Every transfer backend renders in T's aligned frame with T's expression, so T's landmarks are
            # where the face should be. With identity_swap.target_landmarks_fallback the swap goes there; QC
            # then judges R as always. Without it, the item is rejected.
            if not self.config.identity_swap.target_landmarks_fallback:
                raise RowRejected("transfer_no_face", "no face found in the expression-transfer output")
            target_face = face_from_landmarks(landmarks_array(row["t_landmarks68"]))
            how = "target_landmarks"
        source = self.artifacts.get(row["swap_aligned_path"])
        source_face = face_from_landmarks(landmarks_array(row["swap_landmarks68"]))
        swapped = self.swapper.swap(source, source_face, target, target_face)
        url, sha = self.artifacts.put("reference", row["candidate_id"], swapped)
        return dict(swap_backend=self.config.identity_swap.backend, swap_model=self.swapper.model_id,
                    swap_model_sha256=self.swapper.model_sha256, reference_path=url, reference_sha256=sha,
                    swap_target_face=how)
