"""Expression regions (eyes, brows, mouth) as feathered masks from 68 landmarks, and keeping them through a swap.

The swap should carry identity only: where a region is kept, the swapped image takes the expression-transfer
output's pixels (the image whose expression is right), fading into the swapped face over a feather, like
FaceFusion's region mask (its face parser regions: left/right eye, left/right eyebrow, mouth, lips) but drawn from
the 68 iBUG landmarks, so no parser model is needed and the masks follow the transfer's geometry exactly.

"left"/"right" are image left/right (the person's right/left), as in `stages.face.types.KEYPOINT_NAMES`.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from stages.config import KEEP_REGION_NAMES

# Region name -> the iBUG-68 points it is drawn from.
REGION_POINTS: dict[str, tuple[int, ...]] = {
    "left-eye": tuple(range(36, 42)),
    "right-eye": tuple(range(42, 48)),
    "left-eyebrow": tuple(range(17, 22)),
    "right-eyebrow": tuple(range(22, 27)),
    "mouth": tuple(range(48, 60)),  # the outer-lip polygon: lips and whatever is between them
}
EXPRESSION_REGIONS = tuple(REGION_POINTS)
assert EXPRESSION_REGIONS == KEEP_REGION_NAMES, "stages.config.KEEP_REGION_NAMES names the regions drawn here"
DEFAULT_KEEP_REGIONS = KEEP_REGION_NAMES

# Geometry, as shares of the eye's width (corner to corner), so a closed eye still keeps its lids.
EYE_LENGTH = 1.35  # the kept ellipse's long axis
EYE_LID_MARGIN = 0.30  # added to the half-opening above and below the eye's centre line
BROW_THICKNESS = 0.45  # the kept band along the brow points
BROW_CAP = 0.15  # the band runs past each end of the brow by this much
# The mouth keeps today's classic-swap mask exactly: outer-lip polygon, dilated 3 px, feathered 2 px.
MOUTH_DILATE_PX = 3
MOUTH_FEATHER_PX = 2.0


def check_regions(regions: Sequence[str]) -> tuple[str, ...]:
    """The regions as a tuple, or ValueError naming the unknown ones."""
    bad = sorted(set(regions) - set(REGION_POINTS))
    if bad:
        raise ValueError(f"unknown expression regions {bad}; choose from {list(EXPRESSION_REGIONS)}")
    return tuple(regions)


def _points(landmarks68: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks68, np.float64)
    if lm.shape != (68, 2) and lm.size != 136:
        raise ValueError(f"expression regions need 68 landmarks, got shape {lm.shape}")
    return lm.reshape(68, 2)


def eye_width(lm: np.ndarray, eye: str) -> float:
    """Corner-to-corner width of one eye ("left-eye" or "right-eye"), in pixels."""
    p = lm[list(REGION_POINTS[eye])]
    return float(np.linalg.norm(p[3] - p[0]))


def _eye_core(lm: np.ndarray, eye: str, h: int, w: int) -> np.ndarray:
    """uint8 {0, 255}: an ellipse along the eye's corner axis holding the opening and both lids."""
    p = lm[list(REGION_POINTS[eye])]
    width = max(eye_width(lm, eye), 1.0)
    axis = (p[3] - p[0]) / width
    centre = p.mean(axis=0)
    normal = np.array([-axis[1], axis[0]])
    opening = float(np.abs((p - centre) @ normal).max())  # half the opening (0 for a closed eye)
    a = 0.5 * EYE_LENGTH * width
    b = opening + EYE_LID_MARGIN * width
    angle = float(np.degrees(np.arctan2(axis[1], axis[0])))
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
                (int(round(a * 16)), int(round(b * 16))), angle, 0, 360, 255, -1, cv2.LINE_AA, 4)
    cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return mask


def _brow_core(lm: np.ndarray, brow: str, eye: str, h: int, w: int) -> np.ndarray:
    """uint8 {0, 255}: a band along the brow points, a little past both ends."""
    p = lm[list(REGION_POINTS[brow])]
    width = max(eye_width(lm, eye), 1.0)
    ends = [p[0] + (p[0] - p[1]) / max(np.linalg.norm(p[0] - p[1]), 1e-6) * BROW_CAP * width,
            p[-1] + (p[-1] - p[-2]) / max(np.linalg.norm(p[-1] - p[-2]), 1e-6) * BROW_CAP * width]
    line = np.vstack([ends[0], p, ends[1]])
    mask = np.zeros((h, w), np.uint8)
    cv2.polylines(mask, [np.round(line * 16).astype(np.int32)], False, 255,
                  max(int(round(BROW_THICKNESS * width)), 1), cv2.LINE_AA, 4)
    return mask


def _mouth_mask(lm: np.ndarray, h: int, w: int) -> np.ndarray:
    """float32 0..1: 1 on the outer-lip polygon, fading out over MOUTH_DILATE_PX + MOUTH_FEATHER_PX around it."""
    mask = np.zeros((h, w), np.uint8)
    lips32 = lm[48:60].astype(np.float32)  # float32 as the classic swap drew it (same rounding, same pixels)
    cv2.fillPoly(mask, [np.round(lips32 * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    lips = mask > 0
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * MOUTH_DILATE_PX + 1, 2 * MOUTH_DILATE_PX + 1))
    soft = np.asarray(cv2.dilate(mask, k), np.float32) / 255.0
    soft = np.asarray(cv2.GaussianBlur(soft, (0, 0), MOUTH_FEATHER_PX), np.float32)
    soft[lips] = 1.0  # the lips themselves are kept exactly
    return soft


def _feathered(core: np.ndarray, sigma: float) -> np.ndarray:
    """float32 0..1: 1 on the core, a Gaussian ramp of `sigma` px outside it (the core is kept exactly)."""
    soft = core.astype(np.float32) / 255.0
    if sigma > 0:
        r = int(np.ceil(2 * sigma))  # widen first, so the ramp lies outside the core
        grown = cv2.dilate(core, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        soft = np.maximum(soft, np.asarray(cv2.GaussianBlur(grown.astype(np.float32) / 255.0, (0, 0), sigma),
                                           np.float32))
    soft[soft < 1 / 512] = 0.0  # the Gaussian's far tail, which cannot move a uint8 pixel: the region ends
    soft[core >= 255] = 1.0
    return soft


def region_core(landmarks68: np.ndarray, region: str, height: int, width: int) -> np.ndarray:
    """bool: where `region` is kept exactly (before feathering)."""
    lm = _points(landmarks68)
    check_regions([region])
    if region == "mouth":
        return _mouth_mask(lm, height, width) >= 1.0
    side = region.split("-")[0]
    core = (_eye_core(lm, region, height, width) if region.endswith("eye")
            else _brow_core(lm, region, f"{side}-eye", height, width))
    return core >= 255


def region_mask(landmarks68: np.ndarray, regions: Sequence[str], height: int, width: int,
                feather: float = 0.15) -> np.ndarray:
    """float32 0..1 over (height, width): 1 on the chosen regions, fading out over `feather` x the mean eye width
    (the mouth keeps its fixed MOUTH_* feather). All zero for no regions."""
    lm = _points(landmarks68)
    out = np.zeros((height, width), np.float32)
    sigma = feather * 0.5 * (eye_width(lm, "left-eye") + eye_width(lm, "right-eye"))
    for region in check_regions(regions):
        if region == "mouth":
            part = _mouth_mask(lm, height, width)
        else:
            side = region.split("-")[0]
            core = (_eye_core(lm, region, height, width) if region.endswith("eye")
                    else _brow_core(lm, region, f"{side}-eye", height, width))
            part = _feathered(core, sigma)
        out = np.maximum(out, part)
    return out


def keep_expression_regions(swapped_rgb: np.ndarray, transfer_rgb: np.ndarray, transfer_landmarks68: np.ndarray,
                 regions: Sequence[str], feather: float = 0.15) -> np.ndarray:
    """`swapped_rgb` with the transfer's pixels on the chosen regions (feathered); uint8, same size."""
    if not regions:
        return swapped_rgb
    if swapped_rgb.shape != transfer_rgb.shape:
        raise ValueError(f"swapped {swapped_rgb.shape} and transfer {transfer_rgb.shape} differ in size")
    h, w = transfer_rgb.shape[:2]
    a = region_mask(transfer_landmarks68, regions, h, w, feather)[..., None]
    out = swapped_rgb.astype(np.float32) * (1.0 - a) + transfer_rgb.astype(np.float32) * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
