"""Plain data that face models hand each other (a detected face with its landmarks) and its geometry helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# insightface / FaceFusion 5-point order: left eye, right eye, nose tip, left mouth corner, right mouth
# corner ("left" = image left, i.e. the person's right).
KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


@dataclass
class DetectedFace:
    box: np.ndarray  # (4,) float32 x0, y0, x1, y1 in image pixels
    score: float
    keypoints5: np.ndarray  # (5, 2) float32, KEYPOINT_NAMES order
    landmarks68: np.ndarray | None = None  # (68, 2) float32 iBUG-300W order, when a 68-point model ran
    extra: dict = field(default_factory=dict)

    @property
    def short_side(self) -> float:
        x0, y0, x1, y1 = (float(v) for v in self.box)
        return min(x1 - x0, y1 - y0)


def keypoints5_from_68(lm: np.ndarray) -> np.ndarray:
    """The 5 insightface keypoints from 68 iBUG landmarks (eye centres, nose tip, mouth corners)."""
    lm = np.asarray(lm, dtype=np.float32)
    return np.stack([
        lm[36:42].mean(axis=0),
        lm[42:48].mean(axis=0),
        lm[30],
        lm[48],
        lm[54],
    ]).astype(np.float32)


def landmarks_array(flat: list[float]) -> np.ndarray:
    """(N, 2) float32 points from a flat [x0, y0, x1, y1, ...] list (how manifests store landmarks)."""
    return np.asarray(flat, dtype=np.float32).reshape(-1, 2)


def face_from_landmarks(landmarks: np.ndarray, score: float = 1.0) -> DetectedFace:
    """A DetectedFace for a crop whose 68 landmarks are already known (no detector run): their bounding box
    and the 5 keypoints derived from them."""
    lm = np.asarray(landmarks, np.float32).reshape(68, 2)
    box = np.array([*lm.min(axis=0), *lm.max(axis=0)], np.float32)
    return DetectedFace(box=box, score=score, keypoints5=keypoints5_from_68(lm), landmarks68=lm)


def largest_face(faces: list[DetectedFace]) -> DetectedFace | None:
    """The face with the longest short side (the first of equals), None when there is none."""
    return max(faces, key=lambda f: f.short_side) if faces else None
