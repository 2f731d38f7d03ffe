"""Mouth state from 68 landmarks and pixels (open/closed, teeth visible), and the mouth synthesis that the CPU
expression transfer uses: closed lips over an open carrier mouth, a generic interior for a mouth it opens.

Measured on the London set (102 identities, FFHQ-aligned 256 px, dlib landmarks):

    mouth_aspect (inner-lip opening / mouth width)   p50     p90     max
    neutral                                          0.008   0.032   0.123
    smiling                                          0.075   0.186   0.246

    teeth_share (share of the lip polygon 48-59 that looks like teeth)
    neutral: p95 0.001, max 0.024; smiling with closed lips: max 0.015; smiling open: p25 0.063, median 0.134

Hence OPEN_ASPECT = 0.06 and TEETH_SHARE = 0.03. Nothing here copies pixels from another identity: the closed
lips are the carrier's own lips, the synthetic interior is a dark cavity and a generic teeth band coloured from
the carrier's own skin and lips.
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.face.expression import DESCRIPTOR_NAMES, expression_descriptor

OPEN_ASPECT = 0.06
TEETH_SHARE = 0.03
ASPECT_INDEX = DESCRIPTOR_NAMES.index("mouth_aspect")  # the mouth aspect's place in an expression descriptor
# An open mouth whose interior covers at least this share of the opening a transfer needs can be stretched to it.
INTERIOR_SHARE = 0.6

OUTER_LIP = np.arange(48, 60)
INNER_LIP = np.arange(60, 68)
# Inner-lip points and the outer-lip points above/below them (upper lip 61-63 / 50-52, lower 65-67 / 56-58,
# inner corners 60, 64 / outer corners 48, 54).
INNER_TO_OUTER = {60: 48, 61: 50, 62: 51, 63: 52, 64: 54, 65: 56, 66: 57, 67: 58}
UPPER_INNER = (60, 61, 62, 63, 64)
LOWER_INNER = (64, 65, 66, 67, 60)


def mouth_aspect(landmarks68: np.ndarray) -> float:
    """Inner-lip opening over mouth width (scale free); > OPEN_ASPECT means open."""
    return float(expression_descriptor(landmarks68)[ASPECT_INDEX])


def inner_mouth_area(landmarks68: np.ndarray) -> float:
    """Area of the inner-lip polygon (60-67), px^2."""
    lm = np.asarray(landmarks68, np.float32).reshape(68, 2)
    return abs(float(cv2.contourArea(lm[INNER_LIP])))


def is_open(landmarks68: np.ndarray) -> bool:
    return mouth_aspect(landmarks68) > OPEN_ASPECT


def polygon_mask(pts: np.ndarray, h: int, w: int) -> np.ndarray:
    """uint8 {0..255} anti-aliased filled polygon."""
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(pts, np.float64) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA,
                 shift=4)
    return mask


def skin_lab(rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """Median LAB of the cheeks (triangles between jaw, nose and eye), as float32 (3,)."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    m = np.maximum(polygon_mask(lm[[1, 2, 3, 31, 29]], h, w), polygon_mask(lm[[15, 14, 13, 35, 29]], h, w))
    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB).astype(np.float32)
    px = lab[m > 127]
    return np.median(px, axis=0) if len(px) else np.array([160.0, 140.0, 140.0], np.float32)


def teeth_mask(rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """bool (H, W): pixels inside the outer-lip polygon that look like teeth (about as bright as the cheeks and
    clearly less red)."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    inside = polygon_mask(lm[OUTER_LIP], h, w) > 127
    skin = skin_lab(rgb, lm)
    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB).astype(np.float32)
    return inside & (lab[..., 0] > skin[0] - 10) & (lab[..., 1] < skin[1] - 4)


def teeth_share(rgb: np.ndarray, landmarks68: np.ndarray) -> float:
    """Share of the outer-lip polygon that looks like teeth (> TEETH_SHARE: teeth visible)."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    inside = polygon_mask(lm[OUTER_LIP], *rgb.shape[:2]) > 127
    n = int(inside.sum())
    return float(teeth_mask(rgb, lm).sum()) / n if n else 0.0


def closing_source_points(carrier68: np.ndarray, depth: float = 0.4) -> np.ndarray:
    """The carrier's landmarks with each inner-lip point moved `depth` of the way towards its outer-lip point, so
    that warping onto a closed mouth samples only lip, never the carrier's mouth interior (teeth)."""
    c = np.asarray(carrier68, np.float64).reshape(68, 2).copy()
    for inner, outer in INNER_TO_OUTER.items():
        f = depth * (0.5 if inner in (60, 64) else 1.0)
        c[inner] = c[inner] + f * (c[outer] - c[inner])
    return c


# fill_interior: carrier pixels inside the outer lip within INTERIOR_REACH px of the inner-lip polygon that differ
# from the lip tissue's median lightness by more than INTERIOR_CONTRAST (LAB L, 0-255) are mouth interior too
INTERIOR_REACH = 4
INTERIOR_CONTRAST = 20.0


def interior_mask(rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """bool (H, W): the mouth interior of a face: its inner-lip polygon, and what borders it past the landmarks (the
    pixels inside the outer lip within INTERIOR_REACH px of that polygon much darker or brighter than the lip
    tissue: gaps between the teeth, dark mouth corners, tooth edges), grown 1 px."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    outer = polygon_mask(lm[OUTER_LIP], h, w) > 127
    inner = polygon_mask(lm[INNER_LIP], h, w)
    reach = np.ones((2 * INTERIOR_REACH + 1, 2 * INTERIOR_REACH + 1), np.uint8)
    near = cv2.dilate(inner, reach) > 127
    light = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    tissue = outer & ~near
    lip = float(np.median(light[tissue])) if tissue.sum() >= 8 else float(np.median(light[outer])) if outer.any() \
        else 128.0
    mask = (inner > 127) | (outer & near & (np.abs(light - lip) > INTERIOR_CONTRAST))
    k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    return cv2.dilate(mask.astype(np.uint8), k3) > 0


def fill_interior(rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """rgb with its mouth interior (interior_mask) inpainted from the lips round it: what close_lips warps from, so
    that no tooth gap, dark corner or tooth edge of an open carrier mouth survives as a speck or stroke on the closed
    lips (the landmark warp scatters pieces of the interior over the lips, and only tooth-like pixels were inpainted
    after it)."""
    mask = interior_mask(rgb, landmarks68)
    if not mask.any():
        return np.ascontiguousarray(rgb)
    return cv2.inpaint(np.ascontiguousarray(rgb), mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)


def _lip_lab(lab: np.ndarray, lm: np.ndarray, exclude: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Median LAB of the lip ring (outer minus inner polygon) without the `exclude` pixels."""
    h, w = lab.shape[:2]
    ring = (polygon_mask(lm[OUTER_LIP], h, w) > 127) & (polygon_mask(lm[INNER_LIP], h, w) < 128) & ~exclude
    return np.median(lab[ring], axis=0) if ring.sum() >= 8 else fallback


def close_lips(rgb: np.ndarray, landmarks68: np.ndarray, feather_px: float = 1.0) -> np.ndarray:
    """rgb with closed lips: every tooth-like pixel in the lip region and the (thin) inner-mouth polygon are
    inpainted from the surrounding lip, then a darker seam is drawn along the middle of the opening."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    img = np.ascontiguousarray(rgb)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    skin = skin_lab(img, lm)
    k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    region = cv2.dilate(polygon_mask(lm[OUTER_LIP], h, w), k3, iterations=2) > 127
    strict = teeth_mask(img, lm)
    lip = _lip_lab(lab, lm, strict, skin + np.array([-20.0, 8.0, 2.0], np.float32))
    # Teeth, also in shadow: clearly less red than the lips and not darker than them, or much brighter.
    teeth = region & (strict | ((lab[..., 1] < lip[1] - 8) & (lab[..., 0] > lip[0] - 5)) | (lab[..., 0] > lip[0] + 30))
    inner = polygon_mask(lm[INNER_LIP], h, w) > 127
    hole = cv2.dilate((teeth | inner).astype(np.uint8) * 255, k3) > 0
    out = img.copy()
    if hole.any():
        out = cv2.inpaint(img, hole.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        soft = cv2.GaussianBlur(out, (0, 0), 1.2)  # inpainting leaves streaks: smooth inside the hole only
        out[hole] = soft[hole]
    # The seam: the midline between the upper and lower inner lip, darker, about 1.5 px wide.
    mid = (lm[[60, 61, 62, 63, 64]] + lm[[60, 67, 66, 65, 64]]) * 0.5
    seam = np.zeros((h, w), np.uint8)
    cv2.polylines(seam, [np.round(mid * 16).astype(np.int32)], False, 255, thickness=2, lineType=cv2.LINE_AA,
                  shift=4)
    seam_f = cv2.GaussianBlur(seam.astype(np.float32) / 255.0, (0, 0), max(feather_px * 0.8, 0.5))
    out_lab = cv2.cvtColor(out, cv2.COLOR_RGB2LAB).astype(np.float32)
    out_lab[..., 0] *= 1.0 - 0.4 * seam_f
    out = cv2.cvtColor(np.clip(np.round(out_lab), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return out


def synth_interior(rgb: np.ndarray, landmarks68: np.ndarray, feather_px: float = 1.0) -> np.ndarray:
    """rgb with the inner-mouth polygon filled by a generic open mouth: a dark cavity coloured from the lips and an
    upper-teeth band coloured from the skin (brighter, desaturated), shaded towards the corners, with faint gaps
    between the teeth. Nothing is copied from another face."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB).astype(np.float32)
    skin = skin_lab(rgb, lm)
    lip = _lip_lab(lab, lm, teeth_mask(rgb, lm), skin + np.array([-20.0, 8.0, 2.0], np.float32))
    # Mouth frame: x along the inner-lip corners, y perpendicular (down the face).
    left, right = lm[60], lm[64]
    u = (right - left) / max(float(np.hypot(*(right - left))), 1e-6)
    v = np.array([-u[1], u[0]])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rel_x = (xx - left[0]) * u[0] + (yy - left[1]) * u[1]
    rel_y = (xx - left[0]) * v[0] + (yy - left[1]) * v[1]
    width = max(float(np.hypot(*(right - left))), 1.0)
    t = np.clip(rel_x / width, 0.0, 1.0)  # 0..1 from corner to corner
    # The upper and lower inner-lip curves, as y(t), interpolated from the landmarks.
    def curve(idx: tuple[int, ...]) -> np.ndarray:
        p = lm[list(idx)] - left
        px = p @ u
        py = p @ v
        order = np.argsort(px)
        return np.interp(t * width, px[order], py[order])
    y_up = curve((60, 61, 62, 63, 64))
    y_low = curve((60, 67, 66, 65, 64))
    gap = np.maximum(y_low - y_up, 1e-3)
    s = np.clip((rel_y - y_up) / gap, 0.0, 1.0)  # 0 at the upper lip, 1 at the lower lip
    centre = 1.0 - np.abs(2.0 * t - 1.0)  # 1 in the middle, 0 at the corners
    # Cavity: the lip colour, dark and a little redder (tongue, palate); teeth: skin lightness raised towards
    # white, little chroma. Upper teeth reach down `band` of the opening in the middle, less towards the corners;
    # a dimmer lower-teeth row shows along the lower lip in the middle.
    cavity = np.array([max(lip[0] * 0.3, 22.0), 128 + (lip[1] - 128) * 0.9 + 4.0, 128 + (lip[2] - 128) * 0.5],
                      np.float32)
    teeth = np.array([min(skin[0] + 0.55 * (255 - skin[0]), 235.0), 128 + (skin[1] - 128) * 0.15 + 1.0,
                      128 + (skin[2] - 128) * 0.35 + 4.0], np.float32)
    band = 0.7 * np.clip(centre * 1.8, 0.0, 1.0) ** 0.6
    upper_w = np.clip((band - s) / 0.07, 0.0, 1.0)
    lower_w = np.clip((s - (1.0 - 0.16 * np.clip(centre * 1.5, 0.0, 1.0))) / 0.05, 0.0, 1.0) * (centre > 0.25)
    teeth_w = np.maximum(upper_w, lower_w * 0.8)
    # Gaps between teeth: central incisors ~ width/8, narrower towards the corners.
    tooth = width / 8.0 * (0.55 + 0.45 * centre)
    m = np.mod((t - 0.5) * width / np.maximum(tooth, 1e-3), 1.0)
    gaps = np.exp(-(np.minimum(m, 1.0 - m) * 2.0) ** 2 / 0.02)
    shade = 1.0 - 0.5 * (1.0 - centre) ** 2 - 0.1 * gaps - 0.12 * np.exp(-s / 0.08) - 0.2 * lower_w
    fill = np.empty_like(lab)
    for k in range(3):
        fill[..., k] = cavity[k] * (1 - teeth_w) + teeth[k] * teeth_w
    fill[..., 0] *= shade * teeth_w + (1 - teeth_w)
    fill = np.asarray(cv2.GaussianBlur(fill, (0, 0), 0.6), np.float32)
    fill_rgb = cv2.cvtColor(np.clip(fill, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32)
    mask = polygon_mask(lm[INNER_LIP], h, w).astype(np.float32) / 255.0
    if feather_px > 0:
        mask = np.asarray(cv2.GaussianBlur(mask, (0, 0), feather_px), np.float32) * (mask > 0)
    a = mask[..., None]
    out = rgb.astype(np.float32) * (1 - a) + fill_rgb * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
