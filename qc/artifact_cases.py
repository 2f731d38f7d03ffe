"""Mouth-artifact cases built from real faces, to measure the mouth checks (qc/mouth.py) against ground truth.

Each builder takes aligned face crops with their 68 landmarks (same crop frame, e.g. FFHQ 256 px) and returns
the damaged image; the landmarks of the base face stay valid (the damage is local to the mouth):
- ghost_teeth: a smiling face's open mouth (teeth) warped onto a closed mouth and blended semi-transparently;
- seam: a rectangle around the mouth pasted from another person's crop with hard edges;
- blur: the mouth region blurred with a feathered mask.
"""

from __future__ import annotations

import cv2
import numpy as np

from qc.mouth import INNER_LIP, OUTER_LIP


def _lm(landmarks68: np.ndarray) -> np.ndarray:
    return np.asarray(landmarks68, np.float64).reshape(68, 2)


def _feather(mask: np.ndarray, px: float) -> np.ndarray:
    k = max(3, int(round(px)) | 1)
    return cv2.GaussianBlur(mask.astype(np.float32), (k, k), 0)


def ghost_teeth(base: np.ndarray, base_lm: np.ndarray, donor: np.ndarray, donor_lm: np.ndarray,
                alpha: float = 0.5) -> np.ndarray:
    """The donor's mouth interior (inner-lip polygon) warped onto the base mouth, blended at `alpha`."""
    b, d = _lm(base_lm), _lm(donor_lm)
    m, _ = cv2.estimateAffinePartial2D(d[OUTER_LIP].astype(np.float32), b[OUTER_LIP].astype(np.float32))
    h, w = base.shape[:2]
    warped = cv2.warpAffine(donor, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    inner = (d[INNER_LIP] @ m[:, :2].T + m[:, 2]).astype(np.int32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [inner], 1)
    a = _feather(mask, 3)[..., None] * alpha
    return np.clip(base * (1 - a) + warped * a, 0, 255).astype(np.uint8)


def seam(base: np.ndarray, base_lm: np.ndarray, donor: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """A hard-edged rectangle around the mouth from the donor crop (brightness times `gain`)."""
    b = _lm(base_lm)
    mw = float(np.hypot(*(b[54] - b[48])))
    x0, x1 = int(b[48, 0] - 0.45 * mw), int(b[54, 0] + 0.45 * mw)
    y0, y1 = int(b[33, 1] + 0.1 * mw), int(b[8, 1] - 0.25 * mw)
    out = base.copy()
    patch = donor[y0:y1, x0:x1].astype(np.float32) * gain
    out[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)
    return out


def blur(base: np.ndarray, base_lm: np.ndarray, sigma_share: float = 0.06) -> np.ndarray:
    """The mouth region blurred with sigma = sigma_share x mouth width, feathered into the face."""
    b = _lm(base_lm)
    mw = float(np.hypot(*(b[54] - b[48])))
    h, w = base.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(b[OUTER_LIP].astype(np.float32)).astype(np.int32)
    cv2.fillPoly(mask, [hull], 1)
    grown = cv2.dilate(mask, np.ones((int(mw * 0.3) | 1,) * 2, np.uint8))
    a = _feather(grown, mw * 0.2)[..., None]
    blurred = cv2.GaussianBlur(base, (0, 0), sigmaX=max(0.5, sigma_share * mw))
    return np.clip(base * (1 - a) + blurred * a, 0, 255).astype(np.uint8)
