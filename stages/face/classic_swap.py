"""ClassicSwapper: landmark-warp the source face onto the target, match its colour, blend it in (CPU, no weights)."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from stages.config import IdentitySwapConfig
from stages.face.expression_regions import DEFAULT_KEEP_REGIONS, check_regions, region_mask
from stages.face.landmark_warp import piecewise_affine_warp
from stages.face.types import DetectedFace

ALGORITHM = ("classic_swap_v3: piecewise-affine source->target landmarks, Reinhard LAB colour transfer in the face "
             "mask, eyebrows..jaw convex hull eroded and Gaussian-feathered, seamlessClone NORMAL_CLONE then alpha "
             "blend with the feathered mask; the target's expression regions (identity_swap.keep_regions, drawn by "
             "stages.face.expression_regions: eye ellipses with lids, brow bands, the outer-lip polygon dilated 3 px "
             "and feathered 2 px) are kept: the swap carries identity, not the source's expression")

FACE_OUTLINE = np.arange(0, 27)  # jaw 0-16, eyebrows 17-26


def face_hull_mask(landmarks68: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 {0, 255} convex hull of the jaw and eyebrow landmarks."""
    pts = np.asarray(landmarks68, np.float32).reshape(68, 2)[FACE_OUTLINE]
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
    mask = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_8, shift=4)
    return mask


def feathered_mask(landmarks68: np.ndarray, height: int, width: int, feather_px: int) -> np.ndarray:
    """float32 0..1 face mask: the hull eroded by feather_px, then blurred over feather_px; 0 outside the hull."""
    hull = face_hull_mask(landmarks68, height, width)
    k = max(int(feather_px), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    core = cv2.erode(hull, kernel)
    soft = cv2.GaussianBlur(core.astype(np.float32) / 255.0, (2 * k + 1, 2 * k + 1), 0)
    soft[hull == 0] = 0.0
    return soft


def reinhard_lab(src_rgb: np.ndarray, ref_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """src_rgb with the LAB mean and standard deviation of ref_rgb inside mask (stats from the mask only)."""
    m = mask > 0
    if m.sum() < 16:
        return src_rgb
    src = cv2.cvtColor(src_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(ref_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mean, s_std = src[m].mean(axis=0), src[m].std(axis=0)
    r_mean, r_std = ref[m].mean(axis=0), ref[m].std(axis=0)
    gain = np.clip(r_std / np.maximum(s_std, 1e-3), 0.5, 2.0)
    out = (src - s_mean) * gain + r_mean
    return cv2.cvtColor(np.clip(np.round(out), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _require_landmarks(face: DetectedFace, which: str) -> np.ndarray:
    if face.landmarks68 is None:
        raise ValueError(f"ClassicSwapper needs 68 landmarks on the {which} face (DetectedFace.landmarks68 is None); "
                         "use a detector with a 68-point model or DlibDetector.landmarks(rgb, box)")
    return np.asarray(face.landmarks68, np.float64).reshape(68, 2)


class ClassicSwapper:
    """IdentitySwapper without learned weights: warp, colour-match, seamless-clone, feathered alpha blend.

    Only pixels inside the convex hull of the target's jaw and eyebrow landmarks can change, and never the target's
    expression regions (`keep_regions`, feathered over `keep_feather` x the eye width; () keeps nothing).
    """

    model_id = "classic_swap_v3"
    model_sha256 = hashlib.sha256(ALGORITHM.encode()).hexdigest()

    def __init__(self, feather_px: int = 11, seamless: bool = True,
                 keep_regions: tuple[str, ...] = DEFAULT_KEEP_REGIONS, keep_feather: float = 0.15) -> None:
        self.feather_px = int(feather_px)
        self.seamless = bool(seamless)
        self.keep_regions = check_regions(keep_regions)
        self.keep_feather = float(keep_feather)

    @classmethod
    def from_config(cls, swap: IdentitySwapConfig) -> ClassicSwapper:
        return cls(feather_px=swap.feather_px, keep_regions=swap.keep_regions, keep_feather=swap.keep_feather)

    def swap(self, source_rgb: np.ndarray, source_face: DetectedFace,
             target_rgb: np.ndarray, target_face: DetectedFace) -> np.ndarray:
        """target_rgb with the source face pasted onto the target face's landmarks; same size as target_rgb."""
        s_lm = _require_landmarks(source_face, "source")
        t_lm = _require_landmarks(target_face, "target")
        target = np.ascontiguousarray(target_rgb, dtype=np.uint8)
        h, w = target.shape[:2]
        warped = piecewise_affine_warp(np.ascontiguousarray(source_rgb), s_lm, t_lm, target.shape)
        hull = face_hull_mask(t_lm, h, w)
        if hull.sum() == 0:
            return target.copy()
        k = max(self.feather_px // 2, 1)
        inner = cv2.erode(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
        stats_mask = inner if inner.any() else hull
        warped = reinhard_lab(warped, target, stats_mask)
        alpha = feathered_mask(t_lm, h, w, self.feather_px)
        if self.keep_regions:
            # Eyes, brows and mouth are expression: keep the target's (the expression transfer's), so the source
            # photo's eye opening, brow raise and mouth state (teeth, smile) never come in with its identity.
            alpha *= 1.0 - region_mask(t_lm, self.keep_regions, h, w, self.keep_feather)
        blended = warped
        if self.seamless and inner.any():
            blended = self._seamless(warped, target, inner)
        a = alpha[..., None]
        out = target.astype(np.float32) * (1.0 - a) + blended.astype(np.float32) * a
        out = np.clip(np.round(out), 0, 255).astype(np.uint8)
        out[hull == 0] = target[hull == 0]  # nothing outside the face hull may change
        return out

    @staticmethod
    def _seamless(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """cv2.seamlessClone (NORMAL_CLONE) of src into dst over mask, padded so the mask never touches a border."""
        pad = 8
        ys, xs = np.nonzero(mask)
        center = (int((xs.min() + xs.max() + 1) // 2) + pad, int((ys.min() + ys.max() + 1) // 2) + pad)
        s = cv2.copyMakeBorder(src, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        d = cv2.copyMakeBorder(dst, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        m = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        try:
            out = cv2.seamlessClone(s, d, m, center, cv2.NORMAL_CLONE)
        except cv2.error:
            return src
        return out[pad:-pad, pad:-pad]
