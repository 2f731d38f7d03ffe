"""FaceFusion's crop geometry: 5-point similarity warp to a template, box mask, paste-back.

Same operations as FaceFusion 3.x `face_helper.py` / `face_masker.create_box_mask`, on BGR uint8
frames as FaceFusion uses them.
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.onnx.registry import template_points


def estimate_matrix(keypoints5: np.ndarray, template: str, size: tuple[int, int]) -> np.ndarray:
    """2x3 similarity (rotation, uniform scale, translation) taking the 5 points onto the template."""
    dst = template_points(template, size)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(keypoints5, np.float32), dst, method=cv2.RANSAC,
                                            ransacReprojThreshold=100)
    if matrix is None:
        raise ValueError("could not fit a similarity transform to the 5 keypoints")
    return matrix


def warp_face(frame: np.ndarray, keypoints5: np.ndarray, template: str,
              size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The aligned crop of `size` (width, height) and the matrix frame -> crop."""
    matrix = estimate_matrix(keypoints5, template, size)
    crop = cv2.warpAffine(frame, matrix, size, borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_AREA)
    return crop, matrix


def box_mask(size: tuple[int, int], blur: float, padding: tuple[int, int, int, int]) -> np.ndarray:
    """Feathered rectangle over the crop, float32 in [0, 1]; padding in % (top, right, bottom, left)."""
    width, height = size
    blur_amount = int(width * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    mask = np.ones((height, width), np.float32)
    mask[:max(blur_area, int(height * padding[0] / 100)), :] = 0
    mask[-max(blur_area, int(height * padding[2] / 100)):, :] = 0
    mask[:, :max(blur_area, int(width * padding[3] / 100))] = 0
    mask[:, -max(blur_area, int(width * padding[1] / 100)):] = 0
    if blur_amount > 0:
        mask = np.asarray(cv2.GaussianBlur(mask, (0, 0), blur_amount * 0.25), np.float32)
    return mask


def paste_area(frame_shape: tuple[int, ...], crop_size: tuple[int, int],
               matrix: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Frame box (x0, y0, x1, y1) the crop maps back onto, and the crop -> box matrix."""
    height, width = frame_shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [crop_size[0], 0], [crop_size[0], crop_size[1]], [0, crop_size[1]]], np.float64)
    points = cv2.transform(corners.reshape(-1, 1, 2), inverse).reshape(-1, 2)
    x0, y0 = np.clip(np.floor(points.min(axis=0)).astype(int), 0, [width, height])
    x1, y1 = np.clip(np.ceil(points.max(axis=0)).astype(int), 0, [width, height])
    paste_matrix = inverse.copy()
    paste_matrix[0, 2] -= x0
    paste_matrix[1, 2] -= y0
    return (int(x0), int(y0), int(x1), int(y1)), paste_matrix


def paste_back(frame: np.ndarray, crop: np.ndarray, crop_mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Blend the crop back into a copy of the frame through the mask (FaceFusion's paste_back)."""
    crop_size = (crop.shape[1], crop.shape[0])
    (x0, y0, x1, y1), paste_matrix = paste_area(frame.shape, crop_size, matrix)
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    size = (x1 - x0, y1 - y0)
    mask = cv2.warpAffine(crop_mask, paste_matrix, size).clip(0, 1)[:, :, None]
    warped = cv2.warpAffine(crop, paste_matrix, size, borderMode=cv2.BORDER_REPLICATE)
    region = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = (region * (1 - mask) + warped * mask).astype(frame.dtype)
    return out


def inverse_mask(frame_shape: tuple[int, ...], crop_mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The crop mask in frame coordinates (float32, zero outside the paste area), for checks and QC."""
    crop_size = (crop_mask.shape[1], crop_mask.shape[0])
    (x0, y0, x1, y1), paste_matrix = paste_area(frame_shape, crop_size, matrix)
    full = np.zeros(frame_shape[:2], np.float32)
    if x1 > x0 and y1 > y0:
        full[y0:y1, x0:x1] = cv2.warpAffine(crop_mask, paste_matrix, (x1 - x0, y1 - y0)).clip(0, 1)
    return full
