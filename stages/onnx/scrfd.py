"""Face detection with insightface's SCRFD (det_10g): boxes and 5 keypoints; 68 landmarks from dlib on each box."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from insightface.model_zoo.scrfd import SCRFD

from stages.config import IngestConfig, ModelsConfig
from stages.face.types import DetectedFace
from stages.onnx.model_files import ResolvedModel, resolve_model
from stages.onnx.sessions import get_insightface_model, resolve_providers

# (rgb, box x0 y0 x1 y1) -> (68, 2) iBUG landmarks
Landmarker = Callable[[np.ndarray, np.ndarray], np.ndarray]


def dlib_landmarker(ingest: IngestConfig) -> Landmarker:
    """dlib's 68-point shape predictor run on a given box (loaded on first use)."""
    state: dict[str, object] = {}

    def landmarks(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        if "dlib" not in state:
            from stages.face.dlib_models import DlibDetector
            state["dlib"] = DlibDetector.from_config(ingest)
        return state["dlib"].landmarks(rgb, box)  # type: ignore[attr-defined]

    return landmarks


class ScrfdDetector:
    """FaceDetector on an SCRFD ONNX file (letterboxed to a square input, insightface decoding and NMS)."""

    def __init__(self, resolved: ResolvedModel, providers: Sequence[str], input_size: int = 640,
                 threshold: float = 0.5, nms_threshold: float = 0.4,
                 landmarker: Landmarker | None = None) -> None:
        self.resolved = resolved
        self.model_id = resolved.name
        self.model_sha256 = resolved.sha256
        self.hash_override = resolved.hash_override
        # static_shape_sessions=False: one session per model, not one per input size
        self.model: SCRFD = get_insightface_model(resolved.path, providers, SCRFD, static_shape_sessions=False)
        if not self.model.use_kps:
            raise ValueError(f"{resolved.origin} is an SCRFD without keypoints; a *_kps / det_10g model is needed")
        self.input_size = (input_size, input_size)
        self.threshold = threshold
        self.nms_threshold = nms_threshold
        self.landmarker = landmarker

    @classmethod
    def from_config(cls, ing: IngestConfig, models: ModelsConfig) -> ScrfdDetector:
        if not ing.scrfd_model:
            raise ValueError("ingest.scrfd_model is required with detector 'scrfd'")
        return cls(resolve_model(models, ing.scrfd_model), resolve_providers(models.providers),
                   ing.scrfd_input_size, ing.scrfd_threshold, ing.scrfd_nms_threshold, dlib_landmarker(ing))

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces in an RGB uint8 image, best score first."""
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        self.model.nms_thresh = self.nms_threshold
        dets, kpss = self.model.detect(bgr, input_size=self.input_size, det_thresh=self.threshold)
        faces = []
        for det, kps in zip(dets, kpss if kpss is not None else [None] * len(dets), strict=False):
            box = det[:4].astype(np.float32)
            lm68 = None
            if self.landmarker is not None:
                lm68 = np.asarray(self.landmarker(rgb, box), np.float32)
            faces.append(DetectedFace(box=box, score=float(det[4]), keypoints5=np.asarray(kps, np.float32),
                                      landmarks68=lm68, extra={"detector": self.model_id}))
        return faces
