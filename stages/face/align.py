"""FFHQ-style face alignment from 68 landmarks as a single affine warp (cv2, reflected borders)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stages.face.types import keypoints5_from_68


@dataclass
class AlignedFace:
    image: np.ndarray  # (size, size, 3) uint8 RGB
    matrix: np.ndarray  # (2, 3) float64 affine, original image pixels -> crop pixels
    landmarks68: np.ndarray  # (68, 2) float32 in crop pixels
    keypoints5: np.ndarray  # (5, 2) float32 in crop pixels


def transform_points(pts: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points; returns float32 (N, 2)."""
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def ffhq_quad(landmarks68: np.ndarray) -> np.ndarray:
    """The FFHQ crop quad (4, 2): top-left, bottom-left, bottom-right, top-right, in image pixels."""
    lm = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= max(np.hypot(*x), 1e-9)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_align(rgb: np.ndarray, landmarks68: np.ndarray, size: int) -> AlignedFace:
    """Crop, rotate and scale the face to a size x size FFHQ-aligned image (one warpAffine, border reflect).

    Strong downscales are pre-filtered with an area resize so the crop does not alias.
    """
    if landmarks68 is None:
        raise ValueError("ffhq_align needs 68 landmarks")
    quad = ffhq_quad(landmarks68)
    src = np.asarray([quad[0], quad[1], quad[3]], np.float32)
    dst = np.asarray([[0, 0], [0, size], [size, 0]], np.float32)
    matrix = cv2.getAffineTransform(src, dst).astype(np.float64)

    img = np.ascontiguousarray(rgb)
    warp_m = matrix
    scale = size / max(np.hypot(*(quad[3] - quad[0])), 1e-9)
    shrink = int(np.floor(1.0 / scale)) if scale < 0.5 else 1
    if shrink >= 2:
        h, w = img.shape[:2]
        x0, y0 = np.floor(quad.min(axis=0)).astype(int) - 2 * shrink
        x1, y1 = np.ceil(quad.max(axis=0)).astype(int) + 2 * shrink
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 >= 2 * shrink and y1 - y0 >= 2 * shrink:
            part = img[y0:y1, x0:x1]
            sw, sh = max((x1 - x0) // shrink, 1), max((y1 - y0) // shrink, 1)
            img = cv2.resize(part, (sw, sh), interpolation=cv2.INTER_AREA)
            fx, fy = (x1 - x0) / sw, (y1 - y0) / sh
            # small-image pixel (u, v) centre sits at original ((u + .5) * fx - .5 + x0, ...)
            to_orig = np.array([[fx, 0, x0 + 0.5 * fx - 0.5], [0, fy, y0 + 0.5 * fy - 0.5], [0, 0, 1]])
            warp_m = (np.vstack([matrix, [0, 0, 1]]) @ to_orig)[:2]
    image = cv2.warpAffine(img, warp_m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lm_crop = transform_points(landmarks68, matrix)
    return AlignedFace(image=image, matrix=matrix, landmarks68=lm_crop, keypoints5=keypoints5_from_68(lm_crop))
