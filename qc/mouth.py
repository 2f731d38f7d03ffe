"""Mouth interior and artifact scores of a face crop with its 68 landmarks (iBUG order).

- mouth_aspect: inner-lip opening / mouth width (open vs closed).
- teeth_share: share of the lip region (outer-lip polygon) whose colour is teeth-like: brighter and much less
  chromatic than the skin around the mouth (CIELAB). On closed lips this is ghosted teeth.
- seam_score: the strongest straight brightness step running across the whole skin box around the mouth (median
  signed gradient along a row or column, lips excluded), in grey levels: a pasted patch's edge.
- lip_line_whiteness: how much lighter and greyer than the lips the band along the lip line is (ghost teeth).
- mouth_sharpness_ratio: Laplacian variance of the mouth box / that of the eye band (a blurred mouth).
- tint: how much more chromatic the mouth's most coloured spot is than the skin around it (CIELAB chroma): on a
  greyscale corpus, colour the generator painted into R's mouth (a tinted tooth strip), which no luminance feature
  sees.
A face without chroma (a greyscale photo: the lips and the skin around them both below GREY_MAX_CHROMA) takes a
luminance path for teeth_share and lip_line_whiteness (see _grey_teeth_share, _grey_lip_line); a colour face takes
the CIELAB path unchanged.
Thresholds live in qc.mouth (pipeline/config.py); benchmarks/bench_qc_validity.py measures them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

OUTER_LIP = slice(48, 60)
INNER_LIP = slice(60, 68)
# A pixel is teeth-like when L/L_skin - C/C_skin exceeds this (skin: the ring around the lips; teeth are about
# as light as skin and nearly grey, lips darker and as chromatic as skin).
TEETH_WHITENESS = 0.45
# Luminance path (greyscale photos), fitted on the London set in greyscale (benchmarks/bench_mouth_grey.py):
GREY_MAX_CHROMA = 4.0  # median CIELAB chroma of the lips and of the ring around them both below: no chroma
GREY_TEETH_LIGHTNESS = 1.1  # teeth-like: L above this times the lighter of the perioral skin and the lip tissue
GREY_TEETH_BAND = 0.08  # ... and within this share of the mouth width (vertically) of the inner-lip polygon
GREY_LINE_MARGIN = 0.05  # a real lip line is darker than the lips; the score is shifted by this so that the
# shared threshold (qc.mouth.max_lip_line_whiteness, -0.05) flags a grey lip line no darker than the lips


@dataclass(frozen=True)
class MouthScores:
    mouth_aspect: float
    teeth_share: float
    seam_score: float
    sharpness_ratio: float
    lip_line_whiteness: float
    tint: float


def mouth_aspect(landmarks68: np.ndarray) -> float:
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    width = float(np.hypot(*(lm[54] - lm[48])))
    opening = float(np.mean(np.hypot(*(lm[[67, 66, 65]] - lm[[61, 62, 63]]).T)))
    return opening / max(width, 1e-6)


def _poly_mask(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m.astype(bool)


def _mouth_width(lm: np.ndarray) -> float:
    return float(max(np.hypot(*(lm[54] - lm[48])), 4.0))


def _ring(lips: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The perioral skin: the lips dilated by a quarter of the mouth width, less the lips."""
    k = max(3, int(round(_mouth_width(lm) * 0.25)) | 1)
    return cv2.dilate(lips.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool) & ~lips


def _lightness_chroma(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CIELAB lightness L and chroma |(a, b)| per pixel (OpenCV's 8-bit scale: L 0-255, neutral a = b = 128)."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    return lab[..., 0], np.hypot(lab[..., 1] - 128.0, lab[..., 2] - 128.0)


def _has_chroma(chroma: np.ndarray, lips: np.ndarray, ring: np.ndarray) -> bool:
    """False for a greyscale face: the median chroma of the lips and of the ring around them both below
    GREY_MAX_CHROMA (a greyscale photo decoded to RGB has a few units at most, colour skin 12 or more)."""
    parts = [float(np.median(chroma[m])) for m in (lips, ring) if m.sum() >= 8]
    return not parts or max(parts) >= GREY_MAX_CHROMA


def face_has_chroma(rgb: np.ndarray, landmarks68: np.ndarray) -> bool:
    """Whether the mouth checks take the colour path (True) or the luminance path for greyscale photos."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    lips = _poly_mask(rgb.shape[:2], lm[OUTER_LIP])
    ring = _ring(lips, lm)
    return _has_chroma(_lightness_chroma(rgb)[1], lips, ring)


def _inner_line(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """The inner-lip polygon with its outline (uint8 0/1): the lip line of a closed mouth."""
    inner = np.zeros(shape, np.uint8)
    pts = np.round(lm[INNER_LIP]).astype(np.int32)
    cv2.fillPoly(inner, [pts], 1)
    cv2.polylines(inner, [pts], True, 1, 1)
    return inner


def _grey_teeth_share(light: np.ndarray, lips: np.ndarray, ring: np.ndarray, lm: np.ndarray) -> float:
    """Luminance path of teeth_share: the share of the outer-lip polygon whose pixels lie near the mouth opening
    (the inner-lip polygon grown vertically by GREY_TEETH_BAND x mouth width) and are lighter than
    GREY_TEETH_LIGHTNESS times both the perioral skin and the lip tissue (lips outside the opening). Without
    chroma, lit lips look like teeth; only the opening, where teeth show, is searched."""
    mw = _mouth_width(lm)
    inner = _inner_line(light.shape, lm)
    k = max(3, int(round(mw * 0.06)) | 1)
    tissue = lips & ~cv2.dilate(inner, np.ones((k, k), np.uint8)).astype(bool)
    ref = max(float(np.median(light[ring])), float(np.median(light[tissue if tissue.sum() >= 8 else lips])), 1.0)
    kv = max(3, int(round(mw * GREY_TEETH_BAND)) | 1)
    near = cv2.dilate(inner, np.ones((kv, 3), np.uint8)).astype(bool)
    return float(((light > GREY_TEETH_LIGHTNESS * ref) & lips & near).sum() / lips.sum())


def teeth_share(rgb: np.ndarray, landmarks68: np.ndarray) -> float:
    """Teeth-like share of the outer-lip polygon: L above the perioral skin's and chroma well below it (colour);
    a face without chroma takes the luminance path (_grey_teeth_share)."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    lips = _poly_mask((h, w), lm[OUTER_LIP])
    if lips.sum() < 8:
        return 0.0
    ring = _ring(lips, lm)
    light, chroma = _lightness_chroma(rgb)
    if ring.sum() < 8:
        return 0.0
    if not _has_chroma(chroma, lips, ring):
        return _grey_teeth_share(light, lips, ring, lm)
    skin_l, skin_c = float(np.median(light[ring])), float(np.median(chroma[ring]))
    whiteness = light / max(skin_l, 1.0) - chroma / max(skin_c, 1.0)
    return float((whiteness[lips] > TEETH_WHITENESS).mean())


def seam_score(rgb: np.ndarray, landmarks68: np.ndarray) -> float:
    """Strongest straight step that runs across the whole perioral box (lips excluded), in grey levels.

    Per row (column) of the box, the median signed vertical (horizontal) Sobel gradient over its skin pixels:
    a pasted patch's edge is a step along the whole line, while lip, nostril and fold edges cover only part
    of it and leave the median near zero. The line's step is how much it exceeds the lines 3 px either side."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    mw = _mouth_width(lm)
    # inside the jaw line (5..11) and above the chin's edge
    x0 = int(max(0, lm[48, 0] - 0.7 * mw, lm[5, 0] + 0.1 * mw))
    x1 = int(min(w, lm[54, 0] + 0.7 * mw, lm[11, 0] - 0.1 * mw))
    y0, y1 = int(max(0, lm[33, 1])), int(min(h, lm[57, 1] + 0.6 * (lm[8, 1] - lm[57, 1])))
    if x1 - x0 < 12 or y1 - y0 < 12:
        return 0.0
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)[y0:y1, x0:x1] / 4.0  # grey levels per pixel
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)[y0:y1, x0:x1] / 4.0
    k = max(3, int(round(mw * 0.25)) | 1)
    lips = cv2.dilate(_poly_mask((h, w), lm[OUTER_LIP]).astype(np.uint8), np.ones((k, k), np.uint8))
    keep = ~lips[y0:y1, x0:x1].astype(bool)
    best = 0.0
    for g, axis in ((gx, 0), (gy, 1)):  # columns for vertical seams (gx), rows for horizontal seams (gy)
        masked = np.where(keep, g, np.nan)
        n = keep.sum(axis=axis)
        ok = n >= 0.4 * keep.shape[axis]
        if ok.sum() < 7:
            continue
        line = np.zeros(n.shape, np.float64)
        line[ok] = np.abs(np.nanmedian(masked.T[ok] if axis == 0 else masked[ok], axis=1))
        step = line[3:-3] - 0.5 * (line[:-6] + line[6:])
        best = max(best, float(step.max()))
    return best


def mouth_sharpness_ratio(rgb: np.ndarray, landmarks68: np.ndarray) -> float:
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_64F)
    mw = _mouth_width(lm)

    def box_var(x0: float, y0: float, x1: float, y1: float) -> float:
        a, b = int(max(0, x0)), int(min(w, x1))
        c, d = int(max(0, y0)), int(min(h, y1))
        return float(lap[c:d, a:b].var()) if b - a > 2 and d - c > 2 else 0.0

    mouth = box_var(lm[48, 0] - 0.1 * mw, lm[50:53, 1].min() - 0.15 * mw, lm[54, 0] + 0.1 * mw,
                    lm[56:59, 1].max() + 0.15 * mw)
    eyes = box_var(lm[36, 0], lm[37:39, 1].min() - 0.1 * mw, lm[45, 0], lm[40:42, 1].max() + 0.1 * mw)
    return mouth / max(eyes, 1e-6)


def _grey_lip_line(light: np.ndarray, band: np.ndarray, rest: np.ndarray) -> float:
    """Luminance path of lip_line_whiteness: (L_band - L_lips) / L_lips - GREY_LINE_MARGIN. A real closed lip
    line is darker than the lips (well below -GREY_LINE_MARGIN); teeth showing through make it as light or
    lighter, which the shared threshold (-0.05) flags."""
    l_rest = max(float(np.median(light[rest])), 1.0)
    return (float(np.median(light[band])) - l_rest) / l_rest - GREY_LINE_MARGIN


def lip_line_whiteness(rgb: np.ndarray, landmarks68: np.ndarray) -> float:
    """Lightness minus chroma of the band along the inner-lip line, relative to the rest of the lips.

    (L_band - L_lips) / L_lips - (C_band - C_lips) / C_lips over the middle 70 % of the mouth width: a real
    closed mouth's lip line is darker than the lips (< 0), teeth showing through it make it lighter and greyer.
    A face without chroma takes the luminance path (_grey_lip_line)."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    mw = _mouth_width(lm)
    outer = _poly_mask((h, w), lm[OUTER_LIP])
    inner = _inner_line((h, w), lm)
    k = max(3, int(round(mw * 0.12)) | 1)
    xs = np.arange(w)[None, :]
    mid = (xs > lm[48, 0] + 0.15 * mw) & (xs < lm[54, 0] - 0.15 * mw)
    band = cv2.dilate(inner, np.ones((k, 3), np.uint8)).astype(bool) & outer & mid
    rest = outer & ~band & mid
    if band.sum() < 5 or rest.sum() < 5:
        return 0.0
    light, chroma = _lightness_chroma(rgb)
    if not _has_chroma(chroma, outer, _ring(outer, lm)):
        return _grey_lip_line(light, band, rest)
    l_rest, c_rest = max(float(np.median(light[rest])), 1.0), max(float(np.median(chroma[rest])), 1.0)
    return (float(np.median(light[band])) - l_rest) / l_rest - (float(np.median(chroma[band])) - c_rest) / c_rest


def mouth_tint(rgb: np.ndarray, landmarks68: np.ndarray) -> float:
    """CIELAB chroma of the mouth's most coloured spot (3x3 mean, within the lips grown by a tenth of the mouth
    width) less the median chroma of the perioral skin around that: 0 on a greyscale photo, and on a colour one
    about how much redder the lips are than the skin. A global tint of the whole face cancels."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    lips = _poly_mask(rgb.shape[:2], lm[OUTER_LIP])
    k = max(3, int(round(_mouth_width(lm) * 0.1)) | 1)
    mouth = cv2.dilate(lips.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    ring = _ring(mouth, lm)
    if mouth.sum() < 8 or ring.sum() < 8:
        return 0.0
    chroma = cv2.blur(_lightness_chroma(rgb)[1], (3, 3))
    return float(chroma[mouth].max() - np.median(chroma[ring]))


def mouth_scores(rgb: np.ndarray, landmarks68: np.ndarray) -> MouthScores:
    return MouthScores(mouth_aspect(landmarks68), teeth_share(rgb, landmarks68), seam_score(rgb, landmarks68),
                       mouth_sharpness_ratio(rgb, landmarks68), lip_line_whiteness(rgb, landmarks68),
                       mouth_tint(rgb, landmarks68))
