"""Piecewise-affine landmark warping and the CPU expression-transfer backend built on it (delta transfer).

The warp triangulates the destination points (Delaunay) and builds one inverse map for the whole output:
each output pixel finds its triangle and its barycentric coordinates, which give its position in the source
image; a single cv2.remap then samples it. Seamless (no per-triangle mask seams) and vectorised.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
from scipy.spatial import Delaunay

from stages.config import ExpressionTransferConfig
from stages.face.mouth import (
    INTERIOR_SHARE,
    OPEN_ASPECT,
    TEETH_SHARE,
    close_lips,
    closing_source_points,
    fill_interior,
    inner_mouth_area,
    mouth_aspect,
    synth_interior,
    teeth_share,
)
from stages.face.mouth_render import donor_fits, render_mouth
from stages.face.protocols import TransferRequest

ALGORITHM = ("landmark_warp_v4: delta transfer on similarity-normalised landmarks with T's absolute inner-lip "
             "opening, Delaunay piecewise-affine remap with fixed border/ring anchors; mouth rules (stages.face.mouth, "
             "OPEN_ASPECT 0.06, TEETH_SHARE 0.03): close_lips (closed T, open/teeth carrier: the carrier's interior "
             "and the pixels within 4 px of it 20 L darker/brighter than its lips inpainted from the lips first "
             "(fill_interior), lips warped from 0.4 inside the carrier's inner lip, teeth-like pixels and interior "
             "inpainted from the lip, darker seam), synth_interior (open T, carrier interior < 0.6 of the new one: "
             "dark cavity + generic teeth band from the carrier's own colours), carrier_interior, warp, donor_mouth "
             "(close_lips or synth_interior with a mouth donor of j in T's mouth state); for warp, carrier_interior "
             "and donor_mouth the mouth rendered from the carrier or the donor by stages.face.mouth_render (closed: "
             "teeth inpainted; thin-plate spline on lips, jaw 3-13, nose base 31-35, inner lips only when open; the "
             "outer-lip polygon grown by 0.15 of the mouth width Poisson-cloned in); nothing from T's pixels")

# Points that move little with expression: nose bridge and base, eye corners, upper jaw.
STABLE_POINTS = np.array([0, 1, 15, 16, 27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45])
MOUTH = np.arange(48, 68)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2x3) taking src points to dst points (Umeyama, no reflection)."""
    s = np.asarray(src, np.float64)
    d = np.asarray(dst, np.float64)
    ms, md = s.mean(axis=0), d.mean(axis=0)
    sc, dc = s - ms, d - md
    var = (sc ** 2).sum()
    if var < 1e-12:
        return np.array([[1.0, 0, md[0] - ms[0]], [0, 1.0, md[1] - ms[1]]])
    a = (sc * dc).sum()
    b = (sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]).sum()
    r = np.array([[a, -b], [b, a]]) / var
    t = md - r @ ms
    return np.hstack([r, t[:, None]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.asarray(pts, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def border_anchors(height: int, width: int, per_side: int = 4) -> np.ndarray:
    """Points just outside the image frame: corners plus per_side - 1 evenly spaced points on each side."""
    xs = np.linspace(-1.0, width, per_side + 1)
    ys = np.linspace(-1.0, height, per_side + 1)
    top = np.stack([xs, np.full_like(xs, -1.0)], 1)
    bottom = np.stack([xs, np.full_like(xs, float(height))], 1)
    left = np.stack([np.full_like(ys[1:-1], -1.0), ys[1:-1]], 1)
    right = np.stack([np.full_like(ys[1:-1], float(width)), ys[1:-1]], 1)
    return np.vstack([top, bottom, left, right])


def _dedupe(src: np.ndarray, dst: np.ndarray, tol: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Drop destination points that coincide with an earlier one (Delaunay would ignore them anyway)."""
    key = np.round(dst / tol).astype(np.int64)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = np.sort(first)
    return src[keep], dst[keep]


def piecewise_affine_warp(src_rgb: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray,
                          out_shape: tuple[int, ...], *, add_anchors: bool = True,
                          border_mode: int = cv2.BORDER_REFLECT) -> np.ndarray:
    """Warp src_rgb so that src_pts land on dst_pts, in an image of out_shape (H, W[, C]).

    With add_anchors, the frame of the output gets anchor points whose source positions follow the
    least-squares similarity between the two point sets, so the region outside the points moves rigidly.
    Without, output pixels outside the hull of dst_pts follow that similarity too.
    """
    h, w = int(out_shape[0]), int(out_shape[1])
    s = np.asarray(src_pts, np.float64).reshape(-1, 2)
    d = np.asarray(dst_pts, np.float64).reshape(-1, 2)
    if s.shape != d.shape or len(s) < 3:
        raise ValueError(f"need matching point sets of at least 3 points, got {s.shape} and {d.shape}")
    sim = _similarity(d, s)  # dst -> src
    if add_anchors:
        anchors = border_anchors(h, w)
        d = np.vstack([d, anchors])
        s = np.vstack([s, _apply(sim, anchors)])
    s, d = _dedupe(s, d)
    tri = Delaunay(d)
    yy, xx = np.mgrid[0:h, 0:w]
    pix = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
    simplex = tri.find_simplex(pix)
    inside = simplex >= 0
    map_xy = _apply(sim, pix)  # fallback outside the triangulation
    if inside.any():
        si = simplex[inside]
        t = tri.transform[si]  # (n, 3, 2): inverse affine to barycentric
        b2 = np.einsum("nij,nj->ni", t[:, :2, :], pix[inside] - t[:, 2, :])
        bary = np.column_stack([b2, 1.0 - b2.sum(axis=1)])
        verts = tri.simplices[si]  # (n, 3)
        map_xy[inside] = np.einsum("nk,nkj->nj", bary, s[verts])
    mx = map_xy[:, 0].reshape(h, w).astype(np.float32)
    my = map_xy[:, 1].reshape(h, w).astype(np.float32)
    return cv2.remap(np.ascontiguousarray(src_rgb), mx, my, interpolation=cv2.INTER_LINEAR, borderMode=border_mode)


# Inner-lip point pairs (upper, lower) across the mouth opening, and the points that follow each lip.
_INNER_PAIRS = ((61, 67), (62, 66), (63, 65))
_UPPER_FOLLOW = ((49, 0.5), (50, 1.0), (51, 1.0), (52, 1.0), (53, 0.5))
_LOWER_FOLLOW = ((55, 0.5), (56, 1.0), (57, 1.0), (58, 1.0), (59, 0.5), (6, 0.2), (7, 0.4), (8, 0.5), (9, 0.4),
                 (10, 0.2))


def transfer_geometry(carrier: np.ndarray, source: np.ndarray, target: np.ndarray,
                      absolute_mouth_opening: bool = True) -> np.ndarray:
    """carrier + (target - source): the expression motion, measured after a similarity fit of S onto T on stable
    points, rotated/scaled into the carrier's frame.

    With absolute_mouth_opening, the inner-lip gap is then set to T's (scaled to the carrier): whether a mouth is
    open or closed is not a matter of face shape, and a pure delta cannot close a carrier mouth that is open
    wider than S's. The outer lips and the chin follow the inner lips.
    """
    c = np.asarray(carrier, np.float64).reshape(68, 2)
    s = np.asarray(source, np.float64).reshape(68, 2)
    t = np.asarray(target, np.float64).reshape(68, 2)
    s_on_t = _apply(_similarity(s[STABLE_POINTS], t[STABLE_POINTS]), s)
    delta = t - s_on_t
    lin = _similarity(t[STABLE_POINTS], c[STABLE_POINTS])[:, :2]
    new = c + delta @ lin.T
    if absolute_mouth_opening:
        up_shift, low_shift = [], []
        for a, b in _INNER_PAIRS:
            mid = (new[a] + new[b]) * 0.5
            half = ((t[b] - t[a]) @ lin.T) * 0.5
            up_shift.append(mid - half - new[a])
            low_shift.append(mid + half - new[b])
            new[a], new[b] = mid - half, mid + half
        du, dl = np.mean(up_shift, axis=0), np.mean(low_shift, axis=0)
        for k, f in _UPPER_FOLLOW:
            new[k] += du * f
        for k, f in _LOWER_FOLLOW:
            new[k] += dl * f
    return new.astype(np.float32)


def _ring_anchors(lm: np.ndarray, h: int, w: int, scale: float = 1.3) -> np.ndarray:
    """Fixed points on the face hull scaled up about its centroid, so the deformation stays on the face."""
    hull = cv2.convexHull(np.asarray(lm, np.float32)).reshape(-1, 2).astype(np.float64)
    c = hull.mean(axis=0)
    pts = c + (hull - c) * scale
    return pts[(pts[:, 0] > 0) & (pts[:, 0] < w - 1) & (pts[:, 1] > 0) & (pts[:, 1] < h - 1)]


MOUTH_RULES = ("warp", "close_lips", "carrier_interior", "synth_interior", "donor_mouth")
# The rules that paint a mouth state the carrier does not have (no donor of j in T's state fitted).
PAINTED_RULES = ("close_lips", "synth_interior")


def mouth_rule(carrier_rgb: np.ndarray, carrier68: np.ndarray, new68: np.ndarray,
               carrier_share: float = INTERIOR_SHARE) -> str:
    """Which mouth treatment a transfer gets (one of MOUTH_RULES), from the carrier and the new landmarks only.

    close_lips: the new mouth is closed but the carrier's is open or shows teeth; carrier_interior: both open and
    the carrier's interior is at least carrier_share of the new one (the warp stretches it); synth_interior: the
    new mouth is open and the carrier has no interior to stretch; warp: both closed.
    """
    c = np.asarray(carrier68, np.float64).reshape(68, 2)
    n = np.asarray(new68, np.float64).reshape(68, 2)
    if mouth_aspect(n) <= OPEN_ASPECT:
        return "close_lips" if mouth_aspect(c) > OPEN_ASPECT or teeth_share(carrier_rgb, c) > TEETH_SHARE \
            else "warp"
    if mouth_aspect(c) > OPEN_ASPECT and inner_mouth_area(c) >= carrier_share * inner_mouth_area(n):
        return "carrier_interior"
    return "synth_interior"


class LandmarkWarpTransferer:
    """ExpressionTransferer: move the carrier's landmarks by T - S (identity i's expression motion) and warp the
    carrier face to them; then the mouth rule (mouth_rule): where the carrier's mouth is in the wrong state and the
    request has a mouth donor of j in T's state that fits, the mouth is the donor's ("donor_mouth"), else closed lips
    painted over an open carrier mouth or a synthetic interior for a newly opened one (the transfer stage refuses
    those unless expression_transfer.painted_mouths). A real mouth (the donor's or the carrier's own) is rendered by
    stages.face.mouth_render: a smooth warp and a Poisson blend. Nothing is taken from T's pixels (identity i).

    Deterministic: the request seed is not used. `last_rules` holds the mouth rule of each image of the last call.
    """

    model_id = "landmark_warp_v4"
    model_sha256 = hashlib.sha256(ALGORITHM.encode()).hexdigest()

    def __init__(self, mouth_feather_px: float = 1.0, closing_depth: float = 0.4, mouth_rules: bool = True,
                 fill_closing_interior: bool = True, mouth_donors: bool = True, smooth_mouths: bool = True) -> None:
        self.mouth_feather_px = float(mouth_feather_px)
        self.closing_depth = float(closing_depth)
        self.mouth_rules = bool(mouth_rules)  # False: plain warp ("warp" for every image), for comparisons
        # False: close_lips warps the carrier as it is (landmark_warp_v2's closing), for comparisons
        self.fill_closing_interior = bool(fill_closing_interior)
        self.mouth_donors = bool(mouth_donors)  # False: never a donor's mouth (landmark_warp_v3), for comparisons
        # False: a real mouth stays as the piecewise-affine face warp left it (landmark_warp_v3), for comparisons
        self.smooth_mouths = bool(smooth_mouths)
        self.last_rules: list[str] = []

    @classmethod
    def from_config(cls, transfer: ExpressionTransferConfig) -> LandmarkWarpTransferer:
        return cls()

    def transfer(self, requests: list[TransferRequest]) -> list[np.ndarray]:
        """One RGB uint8 image per request (same size as the carrier)."""
        out = [self.transfer_with_rule(r) for r in requests]
        self.last_rules = [rule for _, rule in out]
        return [img for img, _ in out]

    def transfer_one(self, req: TransferRequest) -> np.ndarray:
        return self.transfer_with_rule(req)[0]

    def rule_for(self, req: TransferRequest) -> str:
        """The mouth rule a request gets, without rendering: recomputable for any stored candidate from its carrier
        and mouth-donor images and the carrier/S/T landmarks (candidates + sources tables), so every transfer stays
        traceable (candidates.transfer_mouth_rule records it too)."""
        c_lm = np.asarray(req.carrier_landmarks, np.float64).reshape(68, 2)
        new_lm = transfer_geometry(c_lm, req.source_landmarks, req.target_landmarks).astype(np.float64)
        return self._rule(req, c_lm, new_lm)

    def _rule(self, req: TransferRequest, c_lm: np.ndarray, new_lm: np.ndarray) -> str:
        if req.mouth_rule is not None:  # decided once already (rule_for)
            return req.mouth_rule
        if not self.mouth_rules:
            return "warp"
        rule = mouth_rule(np.ascontiguousarray(req.carrier_rgb), c_lm, new_lm)
        if self.mouth_donors and req.mouth_rgb is not None and req.mouth_landmarks is not None \
                and donor_fits(rule, req.mouth_rgb, req.mouth_landmarks, new_lm):
            return "donor_mouth"
        return rule

    def transfer_with_rule(self, req: TransferRequest) -> tuple[np.ndarray, str]:
        """The transferred image and its mouth rule (MOUTH_RULES)."""
        carrier = np.ascontiguousarray(req.carrier_rgb)
        h, w = carrier.shape[:2]
        c_lm = np.asarray(req.carrier_landmarks, np.float64).reshape(68, 2)
        new_lm = transfer_geometry(c_lm, req.source_landmarks, req.target_landmarks).astype(np.float64)
        rule = self._rule(req, c_lm, new_lm)
        ring = _ring_anchors(np.vstack([c_lm, new_lm]), h, w)
        warp_src = closing_source_points(c_lm, self.closing_depth) if rule == "close_lips" else c_lm
        src = np.vstack([warp_src, ring, border_anchors(h, w)])
        dst = np.vstack([new_lm, ring, border_anchors(h, w)])
        # closing: the carrier's interior is filled from its lips first (fill_interior), else the warp carries
        # pieces of it (teeth gaps, dark corners) onto the closed lips as specks and strokes
        source = fill_interior(carrier, c_lm) if rule == "close_lips" and self.fill_closing_interior else carrier
        out = piecewise_affine_warp(source, src, dst, carrier.shape, add_anchors=False)
        if rule == "close_lips":
            out = close_lips(out, new_lm, self.mouth_feather_px)
        elif rule == "synth_interior":
            out = synth_interior(out, new_lm, self.mouth_feather_px)
        elif rule == "donor_mouth":
            assert req.mouth_rgb is not None and req.mouth_landmarks is not None  # _rule gives donor_mouth only then
            out = render_mouth(out, req.mouth_rgb, req.mouth_landmarks, new_lm)
        elif self.smooth_mouths and self.mouth_rules:
            out = render_mouth(out, carrier, c_lm, new_lm)
        return out, rule
