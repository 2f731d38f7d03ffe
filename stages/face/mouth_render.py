"""How the CPU expression transfer renders R's mouth: from a real photo of j (the carrier, or where the carrier's
mouth is in the wrong state for T, the mouth donor: another photo of j in T's state), by a smooth thin-plate-spline
warp onto the transfer's new landmarks, Poisson-cloned into the warped face.

Painting a closed mouth over an open one (close_lips) or a generic interior into a closed one (synth_interior) made
most visible mouth artifacts of generated R on London (tests/fixtures/r_mouths_v3: 15 of its 18 artificial R were
closing transfers); the piecewise-affine face warp leaves steps in the lips' shading at its triangle edges. Here
nothing is synthesised and nothing comes from identity i; a closed mouth is rendered without what showed of the
photo's teeth. The planner picks the donor (pipeline/planning/rules.py `mouth_donor`); this module decides whether
it fits and renders the mouth. Poisson cloning is solved here: cv2.seamlessClone drops the gradients within a few
pixels of its mask's edge, which is where the lips are.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import sparse
from scipy.interpolate import RBFInterpolator
from scipy.sparse.linalg import spsolve

from stages.face.mouth import (
    INTERIOR_SHARE,
    OPEN_ASPECT,
    OUTER_LIP,
    TEETH_SHARE,
    inner_mouth_area,
    mouth_aspect,
    polygon_mask,
    teeth_mask,
    teeth_share,
)

# The pasted region: the outer-lip polygon grown by this share of the mouth's width (at least MIN_MARGIN_PX), so
# the lip corners, the philtrum and the skin just below the lower lip come from the donor too and the blend's
# boundary lies on plain skin.
MARGIN_SHARE = 0.15
MIN_MARGIN_PX = 3


def donor_fits(rule: str, donor_rgb: np.ndarray, donor68: np.ndarray, new68: np.ndarray) -> bool:
    """Whether j's donor photo can give the mouth a transfer with this mouth rule needs: closed lips without teeth
    for close_lips; an open mouth with an interior at least INTERIOR_SHARE of the new one (as carrier_interior asks
    of a carrier) for synth_interior. Other rules keep the carrier's mouth."""
    d = np.asarray(donor68, np.float64).reshape(68, 2)
    if rule == "close_lips":
        return mouth_aspect(d) <= OPEN_ASPECT and teeth_share(donor_rgb, d) <= TEETH_SHARE
    if rule == "synth_interior":
        return mouth_aspect(d) > OPEN_ASPECT and inner_mouth_area(d) >= INTERIOR_SHARE * inner_mouth_area(new68)
    return False


# A pixel of closed lips this much brighter (CIELAB L) than the lips' median is a tooth showing between them, also
# on a face without chroma (teeth_mask needs colour).
BRIGHTER_THAN_LIPS = 30.0


def without_teeth(rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """rgb with what shows of the teeth between closed lips (teeth_mask, or lip pixels much brighter than the lips)
    inpainted from the lips round it: a closed donor whose lips part a little would otherwise leave a white sliver,
    stretched by the warp, on R's closed mouth. The dark line between the lips is kept."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    img = np.ascontiguousarray(rgb)
    lips = polygon_mask(lm[OUTER_LIP], h, w) > 127
    if not lips.any():
        return img
    light = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    teeth = teeth_mask(img, lm) | (lips & (light > float(np.median(light[lips])) + BRIGHTER_THAN_LIPS))
    if not teeth.any():
        return img
    k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    return cv2.inpaint(img, cv2.dilate(teeth.astype(np.uint8), k3), 3, cv2.INPAINT_TELEA)


def paste_region(new68: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool (H, W): the region the donor's mouth replaces, the outer-lip polygon of the new landmarks grown by
    MARGIN_SHARE of the mouth's width, one pixel off the image border."""
    lm = np.asarray(new68, np.float64).reshape(68, 2)
    margin = max(MIN_MARGIN_PX, int(round(MARGIN_SHARE * float(np.ptp(lm[48:60, 0])))))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    region = cv2.dilate(polygon_mask(lm[48:60], height, width), k) > 127
    region[[0, -1], :] = False
    region[:, [0, -1]] = False
    return region


def harmonic_fill(boundary_values: np.ndarray, region: np.ndarray) -> np.ndarray:
    """float64 (H, W, C): inside `region` the harmonic function (discrete Laplace equation, 4-neighbour) that equals
    boundary_values on the pixels round it; boundary_values elsewhere. Poisson cloning is the source plus the harmonic
    fill of (destination - source)."""
    h, w = region.shape
    out = np.asarray(boundary_values, np.float64).copy()
    ys, xs = np.nonzero(region)
    n = len(ys)
    if not n:
        return out
    index = -np.ones((h, w), np.int64)
    index[ys, xs] = np.arange(n)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
    rhs = np.zeros((n, out.shape[2]))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx  # region pixels are off the border, so every neighbour is in the image
        inside = index[ny, nx] >= 0
        rows.append(np.nonzero(inside)[0])
        cols.append(index[ny[inside], nx[inside]])
        vals.append(np.full(int(inside.sum()), -1.0))
        rhs[~inside] += out[ny[~inside], nx[~inside]]
    a = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    out[ys, xs] = np.column_stack([spsolve(a, rhs[:, c]) for c in range(out.shape[2])])
    return out


def paste_mouth(face_rgb: np.ndarray, warped_rgb: np.ndarray, region: np.ndarray) -> np.ndarray:
    """face_rgb with `region` (paste_region: off the image border) taken from warped_rgb (the mouth's photo already
    warped onto the new landmarks) by Poisson cloning: its pixels plus the smooth correction that meets the face at
    the region's edge (the photo's lighting and skin tone brought to the face's)."""
    face = np.asarray(face_rgb, np.float64)
    mouth = np.asarray(warped_rgb, np.float64)
    out = np.where(region[..., None], mouth + harmonic_fill(face - mouth, region), face)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# Control points of the mouth's thin-plate spline besides the lips: jaw 3-13 and nose base 31-35, which hold the skin
# round the mouth where the face warp put it.
_FRAME_POINTS = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 31, 32, 33, 34, 35)
_OUTER_AND_CORNERS = tuple(range(48, 60)) + (60, 64)


def smooth_warp(origin_rgb: np.ndarray, origin68: np.ndarray, new68: np.ndarray, box: tuple[int, int, int, int]
                ) -> np.ndarray:
    """origin_rgb resampled over box (x0, y0, x1, y1) of the output frame by the thin-plate spline that takes the new
    landmarks to the origin's (lips, jaw, nose base; the inner lips only where the new mouth is open: the two lips
    of a closed mouth meet, and a spline through coinciding points folds). Outside box: origin_rgb as it is."""
    o = np.asarray(origin68, np.float64).reshape(68, 2)
    n = np.asarray(new68, np.float64).reshape(68, 2)
    lips = tuple(range(48, 68)) if mouth_aspect(n) > OPEN_ASPECT else _OUTER_AND_CORNERS
    idx = np.array(lips + _FRAME_POINTS)
    spline = RBFInterpolator(n[idx], o[idx] - n[idx], kernel="thin_plate_spline", degree=1)
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1]
    pts = np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float64)
    src = (pts + spline(pts)).astype(np.float32)
    out = np.ascontiguousarray(origin_rgb).copy()
    out[y0:y1, x0:x1] = cv2.remap(np.ascontiguousarray(origin_rgb), src[:, 0].reshape(yy.shape),
                                  src[:, 1].reshape(yy.shape), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def render_mouth(face_rgb: np.ndarray, origin_rgb: np.ndarray, origin68: np.ndarray, new68: np.ndarray
                 ) -> np.ndarray:
    """face_rgb (the warped face, its landmarks new68) with its mouth rendered from origin_rgb (a real photo of j, its
    landmarks origin68): without_teeth where the new mouth is closed, smooth_warp onto new68, paste_mouth."""
    h, w = face_rgb.shape[:2]
    n = np.asarray(new68, np.float64).reshape(68, 2)
    origin = without_teeth(origin_rgb, origin68) if mouth_aspect(n) <= OPEN_ASPECT else np.ascontiguousarray(origin_rgb)
    region = paste_region(n, h, w)
    ys, xs = np.nonzero(region)
    if not len(xs):
        return np.ascontiguousarray(face_rgb)
    box = (max(int(xs.min()) - 2, 0), max(int(ys.min()) - 2, 0), min(int(xs.max()) + 3, w), min(int(ys.max()) + 3, h))
    return paste_mouth(face_rgb, smooth_warp(origin, origin68, n, box), region)
