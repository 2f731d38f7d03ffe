"""Build the two conditions from aligned face crops: identity embedding and masked expression template."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from stages.face.protocols import IdentityEmbedder
from stages.face.types import DetectedFace, face_from_landmarks

# An IdentityEmbedder, or any callable with the same signature as its embed().
EmbedderLike = IdentityEmbedder | Callable[[np.ndarray, DetectedFace], np.ndarray]


def face_hull_mask(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 {0, 1} mask of the convex hull of (N, 2) landmarks."""
    mask = np.zeros((height, width), np.uint8)
    hull = cv2.convexHull(np.round(np.asarray(landmarks, np.float32)).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def ellipse_mask(height: int, width: int) -> np.ndarray:
    """The central ellipse of an aligned crop, used when no landmarks are known."""
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, int(height * 0.55)), (int(width * 0.36), int(height * 0.42)), 0, 0, 360, 1, -1)
    return mask


def masked_face(rgb: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
    """The expression template: the aligned crop with everything outside the face hull set to black."""
    h, w = rgb.shape[:2]
    mask = face_hull_mask(landmarks, h, w) if landmarks is not None else ellipse_mask(h, w)
    return (rgb * mask[..., None]).astype(np.uint8)


def embed_identity(embedder: EmbedderLike, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """L2-normalised float32 identity embedding of the face in an aligned crop."""
    face = face_from_landmarks(landmarks)
    fn = embedder.embed if hasattr(embedder, "embed") else embedder
    vec = np.asarray(fn(rgb, face), np.float32).reshape(-1)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec
