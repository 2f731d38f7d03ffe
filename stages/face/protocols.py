"""The call signatures that interchangeable face backends share (dlib / ONNX / diffusion)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stages.face.types import DetectedFace


class ModelIdentity(Protocol):
    model_id: str  # e.g. "dlib_face_recognition_resnet_model_v1", "inswapper_128"
    model_sha256: str  # sha256 of the weights file(s) actually loaded


class FaceDetector(ModelIdentity, Protocol):
    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """All faces in an RGB uint8 image, each with keypoints5 and (when available) landmarks68."""


class IdentityEmbedder(ModelIdentity, Protocol):
    def embed(self, rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        """L2-normalised float32 identity embedding of one face."""


class IdentitySwapper(ModelIdentity, Protocol):
    def swap(self, source_rgb: np.ndarray, source_face: DetectedFace,
             target_rgb: np.ndarray, target_face: DetectedFace) -> np.ndarray:
        """target_rgb with its face's identity replaced by the source face's; same size as target_rgb."""


@dataclass
class TransferRequest:
    """One expression transfer: put T's expression on the carrier identity (aligned crops, same size)."""

    carrier_rgb: np.ndarray  # identity j's aligned face (the face to re-pose / identity condition)
    carrier_landmarks: np.ndarray  # (68, 2) in carrier crop coordinates
    source_landmarks: np.ndarray  # S: identity i, other expression, (68, 2) aligned coordinates
    target_rgb: np.ndarray  # T: identity i, expression e, aligned crop (expression condition)
    target_landmarks: np.ndarray  # (68, 2)
    seed: int
    # j's mouth donor: another photo of the carrier identity, its mouth in T's state (stages/face/mouth_render.py);
    # None where the plan has none. Backends that generate the mouth themselves ignore it.
    mouth_rgb: np.ndarray | None = None
    mouth_landmarks: np.ndarray | None = None  # (68, 2)
    # The CPU warp's mouth rule for this request where already decided (LandmarkWarpTransferer.rule_for, called once
    # by the transfer stage); None: the backend decides.
    mouth_rule: str | None = None


class ExpressionTransferer(ModelIdentity, Protocol):
    def transfer(self, requests: list[TransferRequest]) -> list[np.ndarray]:
        """One RGB uint8 image per request, carrying T's expression on another identity."""
