"""Optional paste-back masks from models: XSeg occlusion and BiSeNet face regions (FaceFusion's face_masker)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from stages.config import ModelsConfig
from stages.onnx.model_files import ResolvedModel, resolve_model
from stages.onnx.registry import FACE_MASK_REGIONS, get_spec
from stages.onnx.sessions import get_session, resolve_providers


def _soften(mask: np.ndarray) -> np.ndarray:
    """FaceFusion's edge treatment: blur, keep the upper half of the ramp, rescale to [0, 1]."""
    return (cv2.GaussianBlur(mask.clip(0, 1), (0, 0), 5).clip(0.5, 1) - 0.5) * 2


class Occluder:
    """XSeg: 1 where the face is visible, 0 over hands, hair, objects. Runs on the BGR crop."""

    def __init__(self, resolved: ResolvedModel, providers: Sequence[str]) -> None:
        self.resolved = resolved
        self.spec = get_spec(resolved.name)
        self.session = get_session(resolved.path, providers)
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def from_config(cls, models: ModelsConfig, name: str) -> Occluder:
        return cls(resolve_model(models, name), resolve_providers(models.providers))

    def __call__(self, crop_bgr: np.ndarray) -> np.ndarray:
        size = self.spec.input_size
        x = cv2.resize(crop_bgr, size)[None].astype(np.float32) / 255.0  # NHWC, BGR
        if self.spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        out = np.asarray(self.session.run(None, {self.input_name: x})[0][0], np.float32)
        if out.ndim == 3 and out.shape[0] < min(out.shape[1:]):
            out = out.transpose(1, 2, 0)
        mask = cv2.resize(out.clip(0, 1), (crop_bgr.shape[1], crop_bgr.shape[0]))
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        return _soften(mask)


class FaceParser:
    """BiSeNet: 1 over the chosen face regions. Runs on the (swapped) BGR crop."""

    def __init__(self, resolved: ResolvedModel, providers: Sequence[str], regions: Sequence[str]) -> None:
        self.resolved = resolved
        self.spec = get_spec(resolved.name)
        self.session = get_session(resolved.path, providers)
        self.input_name = self.session.get_inputs()[0].name
        self.region_ids = [FACE_MASK_REGIONS[r] for r in regions]

    @classmethod
    def from_config(cls, models: ModelsConfig, name: str, regions: Sequence[str]) -> FaceParser:
        return cls(resolve_model(models, name), resolve_providers(models.providers), regions)

    def __call__(self, crop_bgr: np.ndarray) -> np.ndarray:
        x = cv2.resize(crop_bgr, self.spec.input_size)[:, :, ::-1].astype(np.float32) / 255.0
        x = np.asarray((x - np.asarray(self.spec.mean, np.float32)) / np.asarray(self.spec.std, np.float32),
                       np.float32)
        x = x.transpose(2, 0, 1)[None]
        logits = self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0][0]
        regions = np.isin(logits.argmax(0), self.region_ids).astype(np.float32)
        mask = np.asarray(cv2.resize(regions, (crop_bgr.shape[1], crop_bgr.shape[0])), np.float32)
        return _soften(mask)
