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


# The artifacts seen on generated R at 3x (issue 19): each takes one face (crop + its 68 landmarks) and a
# numpy Generator for its random strength, and returns the damaged crop.

def _mouth_width(b: np.ndarray) -> float:
    return float(max(np.hypot(*(b[54] - b[48])), 4.0))


def _opening(b: np.ndarray, shape: tuple[int, int], min_half: float) -> np.ndarray:
    """The mouth opening as a uint8 mask: the inner-lip polygon, or for a (nearly) closed mouth a lens along the
    lip line at least `min_half` x mouth width high on either side."""
    mw = _mouth_width(b)
    inner = b[INNER_LIP].copy()
    top, bottom = inner[1:4], inner[5:8][::-1]  # 61-63 and 67-65, left to right
    gap = bottom[:, 1] - top[:, 1]
    need = np.maximum(min_half * mw * 2 - gap, 0) / 2
    inner[1:4, 1] -= need
    inner[5:8, 1] += need[::-1]
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 1)
    return mask


def _blend(base: np.ndarray, paint: np.ndarray, a: np.ndarray) -> np.ndarray:
    a = a[..., None] if a.ndim == 2 else a
    return np.clip(base * (1 - a) + paint * a, 0, 255).astype(np.uint8)


def slab(base: np.ndarray, base_lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A flat white slab over the mouth opening with a dark outline around it."""
    b = _lm(base_lm)
    h, w = base.shape[:2]
    mask = _opening(b, (h, w), float(rng.uniform(0.03, 0.06)))
    edge = cv2.dilate(mask, np.ones((3, 3), np.uint8)) - cv2.erode(mask, np.ones((3, 3), np.uint8))
    paint = np.full_like(base, int(rng.integers(215, 250)))
    out = _blend(base, paint, _feather(mask, 1))
    return _blend(out, np.full_like(base, int(rng.integers(20, 60))), edge.astype(np.float32) * 0.8)


def outline(base: np.ndarray, base_lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dark line drawn along the outer lip contour (1-2 px, semi-opaque)."""
    b = _lm(base_lm)
    h, w = base.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cv2.polylines(mask, [np.round(b[OUTER_LIP]).astype(np.int32)], True, 1, int(rng.integers(1, 3)))
    return _blend(base, base * 0.25, mask.astype(np.float32) * float(rng.uniform(0.6, 0.9)))


def tinted_strip(base: np.ndarray, base_lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A light tinted strip (yellow, blue, green or pink) across the mouth opening: a tooth strip in a wrong hue."""
    b = _lm(base_lm)
    h, w = base.shape[:2]
    mask = _opening(b, (h, w), 0.025)
    tints = np.array([[235, 215, 120], [150, 185, 240], [170, 230, 160], [240, 160, 190]], np.float32)
    paint = np.broadcast_to(tints[rng.integers(len(tints))], base.shape)
    texture = cv2.cvtColor(base, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None] / 255.0
    return _blend(base, paint * (0.7 + 0.3 * texture), _feather(mask, 1) * float(rng.uniform(0.7, 0.95)))


def stretched_teeth(base: np.ndarray, base_lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The middle of an open mouth's interior stretched sideways (x1.8-2.6) to fill the opening: few, wide teeth."""
    b = _lm(base_lm)
    h, w = base.shape[:2]
    mask = _opening(b, (h, w), 0.0)
    cx = float(b[[62, 66], 0].mean())
    f = float(rng.uniform(1.8, 2.6))
    m = np.array([[1 / f, 0, cx * (1 - 1 / f)], [0, 1, 0]], np.float32)  # destination x -> source x, about the centre
    stretched = cv2.warpAffine(base, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
    return _blend(base, stretched, _feather(mask, 1))


def specks(base: np.ndarray, base_lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light or dark specks (1-2 px) along the lip line, between the lips."""
    b = _lm(base_lm)
    out = base.copy()
    line = np.concatenate([b[[60, 61, 62, 63, 64]], b[[64, 65, 66, 67, 60]]])
    value = int(rng.choice([25, 235]))
    for _ in range(int(rng.integers(4, 9))):
        k = int(rng.integers(len(line) - 1))
        p = line[k] + rng.uniform(0, 1) * (line[k + 1] - line[k])
        cv2.circle(out, (int(round(p[0])), int(round(p[1]))), int(rng.integers(1, 3)), (value,) * 3, -1)
    return out


def ring(base: np.ndarray, base_lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dark ring (ellipse, 2-3 px) around the mouth a little outside the lips."""
    b = _lm(base_lm)
    h, w = base.shape[:2]
    pts = b[OUTER_LIP]
    c = pts.mean(axis=0)
    grow = float(rng.uniform(1.15, 1.35))
    axes = (int((pts[:, 0].max() - pts[:, 0].min()) / 2 * grow), int((pts[:, 1].max() - pts[:, 1].min()) / 2 * grow
                                                                      + 2))
    ang = float(np.degrees(np.arctan2(*(b[54] - b[48])[::-1])))
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (int(c[0]), int(c[1])), axes, ang, 0, 360, 1, int(rng.integers(2, 4)))
    return _blend(base, base * 0.35, _feather(mask, 3) * float(rng.uniform(0.6, 0.9)) * 1.5)


def white_band(base: np.ndarray, base_lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The opening of an open mouth filled by a uniform white band (no gaps between teeth, no outline)."""
    b = _lm(base_lm)
    h, w = base.shape[:2]
    mask = _opening(b, (h, w), 0.02)
    value = float(rng.uniform(215, 245))
    paint = np.clip(value + rng.normal(0, 2, base.shape[:2])[..., None], 0, 255)
    return _blend(base, np.broadcast_to(paint, base.shape), _feather(mask, 1) * 0.95)


# kind -> (builder, needs an open mouth with teeth)
DAMAGE: dict[str, tuple] = {"slab": (slab, False), "outline": (outline, False), "tinted_strip": (tinted_strip, False),
                            "stretched_teeth": (stretched_teeth, True), "specks": (specks, False),
                            "ring": (ring, False), "white_band": (white_band, True)}
