"""Expression-template augmentation for "base" training (R = augmented T): flip, colour jitter, small affine."""

from __future__ import annotations

import cv2
import numpy as np


def augment_template(rgb: np.ndarray, rng: np.random.Generator, max_rotate: float = 10.0, max_scale: float = 0.08,
                     max_shift: float = 0.05, jitter: float = 0.2) -> np.ndarray:
    """A randomly flipped, colour-jittered, slightly rotated/scaled/shifted copy of a uint8 RGB image."""
    img = rgb[:, ::-1] if rng.random() < 0.5 else rgb
    h, w = img.shape[:2]
    angle = rng.uniform(-max_rotate, max_rotate)
    scale = 1.0 + rng.uniform(-max_scale, max_scale)
    m = np.asarray(cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale), np.float64)
    m[:, 2] += rng.uniform(-max_shift, max_shift, 2) * (w, h)
    img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    x = img.astype(np.float32) / 255.0
    brightness, contrast, saturation = 1.0 + rng.uniform(-jitter, jitter, 3)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * saturation
    x = (x - x.mean()) * contrast + x.mean()
    x = x * brightness
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
