"""Identity swap: replace the face in the expression-transferred image with swap-source j's face."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from core.config import StageResources, Strict
from manifests.artifacts import ArtifactStore
from stages.base import RowRejected, RowwiseStage
from stages.face.backends import build_detector, build_swapper
from stages.face.types import DetectedFace, keypoints5_from_68
from stages.pairing import landmarks_array


class IdentitySwapConfig(Strict):
    backend: Literal["classic", "onnx"] = "classic"
    model: str | None = None  # registry name for backend onnx, e.g. inswapper_128
    feather_px: int = Field(11, ge=1)
    # When no face is detected in the expression-transfer output, swap onto T's landmarks instead of
    # rejecting (transfers are rendered in T's aligned frame); recorded per row as swap_target_face.
    target_landmarks_fallback: bool = False
    # onnx backend: ArcFace that makes the swap source embedding (default: the swapper's registry embedder,
    # arcface_w600k_r50; deliberately not qc.identity.model, so QC can judge with another network).
    embedder_model: str | None = None
    converter_model: str | None = None  # embedding converter for simswap (default: its registry converter)
    # FaceFusion-style paste-back for hyperswap/simswap: box mask blur (share of crop) and padding in %
    # (top, right, bottom, left); optional occlusion (XSeg) and region (BiSeNet) masks when named.
    mask_blur: float = Field(0.3, ge=0, le=1)
    mask_padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    occluder_model: str | None = None  # e.g. xseg_3
    parser_model: str | None = None  # e.g. bisenet_resnet_34
    mask_regions: tuple[str, ...] = ("skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye",
                                     "glasses", "nose", "mouth", "upper-lip", "lower-lip")
    resources: StageResources = StageResources()

    @field_validator("mask_regions")
    @classmethod
    def _known_regions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        known = {"skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "glasses", "nose", "mouth",
                 "upper-lip", "lower-lip"}
        bad = sorted(set(v) - known)
        if bad or not v:
            raise ValueError(f"unknown mask regions {bad}; choose from {sorted(known)}")
        return v


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

    config_section = "identity_swap"
    config: IdentitySwapConfig

    def setup(self) -> None:
        self.swapper = build_swapper(self.config, self.context.models)
        self.detector = build_detector(self.context.ingest, self.context.models)
        self.artifacts = ArtifactStore(self.context.run)

    def _prepare(self, row: dict[str, Any]) -> tuple[tuple, str]:
        """(source, source face, target, target face) for one row, and how the target face was found."""
        target = self.artifacts.get(row["transfer_path"])
        target_face = largest_face(self.detector.detect(target))
        how = "detected"
        if target_face is None or target_face.landmarks68 is None:
            # Every transfer backend renders in T's aligned frame with T's expression, so T's landmarks are
            # where the face should be. With identity_swap.target_landmarks_fallback the swap goes there; QC
            # then judges R as always. Without it, the item is rejected.
            if not self.config.target_landmarks_fallback:
                raise RowRejected("transfer_no_face", "no face found in the expression-transfer output")
            target_face = face_from_landmarks(landmarks_array(row["t_landmarks68"]))
            how = "target_landmarks"
        source = self.artifacts.get(row["swap_aligned_path"])
        source_face = face_from_landmarks(landmarks_array(row["swap_landmarks68"]))
        return (source, source_face, target, target_face), how

    def _store(self, row: dict[str, Any], swapped: np.ndarray, how: str) -> dict[str, Any]:
        url, sha = self.artifacts.put("reference", row["candidate_id"], swapped)
        return dict(swap_backend=self.config.backend, swap_model=self.swapper.model_id,
                    swap_model_sha256=self.swapper.model_sha256, reference_path=url, reference_sha256=sha,
                    swap_target_face=how)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        item, how = self._prepare(row)
        return self._store(row, self.swapper.swap(*item), how)

    def process_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """Batched through swap_batch when the backend has it; a failed batch is retried item by item."""
        swap_batch = getattr(self.swapper, "swap_batch", None)
        if swap_batch is None:
            return super().process_rows(rows)
        prepared: list[tuple[tuple, str] | Exception] = []
        for row in rows:
            try:
                prepared.append(self._prepare(row))
            except Exception as exc:  # noqa: BLE001 - recorded as this row's reject
                prepared.append(exc)
        ok = [(row, p) for row, p in zip(rows, prepared, strict=False) if not isinstance(p, Exception)]
        try:
            swapped = swap_batch([p[0] for _, p in ok])
        except Exception:  # noqa: BLE001 - isolate the failing item
            return super().process_rows(rows)
        done = {id(row): self._store(row, img, p[1]) for (row, p), img in zip(ok, swapped, strict=False)}
        return [p if isinstance(p, Exception) else done[id(row)] for row, p in zip(rows, prepared, strict=False)]
