"""Mouth realism: how far a face's mouth lies from a corpus's real mouths in a small descriptor space.

The descriptor (`mouth_descriptor`) is measured in a canonical mouth frame (the mouth corners mapped to fixed
points, FRAME_W x FRAME_H pixels, the mouth width half the frame's width), on luminance relative to the perioral
skin (so lighting and greyscale/colour do not matter), plus the chroma of the mouth opening relative to the skin
where the corpus has colour:
- luminance quantiles of the opening (inner-lip polygon, grown) and of the lip tissue;
- the uniformity and texture of the opening's bright part (a synthetic teeth band is flat);
- gradient energy in the opening, the lips and the skin ring (a drawn ring or outline adds edges where real skin
  is smooth), horizontal vs vertical edges in the opening (stretched teeth lose their gaps);
- outline contrast: the outer and inner lip contours against the pixels either side (a dark outline);
- specks: pixels far from their 5x5 median in the lip band, and small dark or light spots that no line-shaped
  morphology explains (`speck_map`) on the lips and in the ring;
- a vertical profile of the central columns (lip line, teeth band, ring), VPROFILE_BINS rows;
- with colour, the hue of the opening's bright part relative to the skin (a tinted tooth strip).
Zero-inflated shares (clipped pixels, impulses in the ring) and duplicates were left out: a feature that is 0 on
nearly every real mouth has no scale, and one such feature's false alarms set the threshold for all.

`RealMouthBank` holds the descriptors and shapes (`mouth_shape`) of a corpus's real mouths and their identities.
A mouth's realism score: its deviation, feature by feature, from the median descriptor of the K_NEIGHBOURS real
mouths nearest in shape (other identities: what a real mouth of that shape looks like), in units of that feature's
DEVIATION_QUANTILE of the real mouths' own deviations; the largest of them (TOP_FEATURES): one feature far off (an
outline, a ring, a flat band) is enough. qc/mouth_calibration.py sets the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

FRAME_W, FRAME_H = 128, 96  # canonical mouth frame; the mouth corners at x = 32 and 96, y = 44
VPROFILE_BINS = 12
K_NEIGHBOURS = 5
TOP_FEATURES = 1
DEVIATION_QUANTILE = 0.99
_CORNERS = np.array([[32.0, 44.0], [96.0, 44.0]])
_OUTER, _INNER = slice(48, 60), slice(60, 68)


def _similarity(lm: np.ndarray) -> np.ndarray:
    """2x3 similarity transform: mouth corners (48, 54) -> _CORNERS."""
    a, b = lm[48], lm[54]
    d = b - a
    scale = (_CORNERS[1, 0] - _CORNERS[0, 0]) / max(float(np.hypot(*d)), 1e-6)
    ang = -np.arctan2(d[1], d[0])
    c, s = scale * np.cos(ang), scale * np.sin(ang)
    rot = np.array([[c, -s], [s, c]])
    t = _CORNERS[0] - rot @ a
    return np.hstack([rot, t[:, None]])


def _masks(lm: np.ndarray) -> dict[str, np.ndarray]:
    shape = (FRAME_H, FRAME_W)
    outer, inner, inner_line = (np.zeros(shape, np.uint8) for _ in range(3))
    cv2.fillPoly(outer, [np.round(lm[_OUTER]).astype(np.int32)], 1)
    cv2.fillPoly(inner, [np.round(lm[_INNER]).astype(np.int32)], 1)
    cv2.polylines(inner, [np.round(lm[_INNER]).astype(np.int32)], True, 1, 1)
    opening = (cv2.dilate(inner, np.ones((5, 5), np.uint8)) > 0) & (outer > 0)
    grown = cv2.dilate(outer, np.ones((17, 17), np.uint8))
    ring = (grown > 0) & (outer == 0)
    contour = np.zeros(shape, np.uint8)
    cv2.polylines(contour, [np.round(lm[_OUTER]).astype(np.int32)], True, 1, 1)
    near = cv2.dilate(contour, np.ones((7, 7), np.uint8)) > 0
    cv2.polylines(contour, [np.round(lm[_OUTER]).astype(np.int32)], True, 1, 2)
    out_side = near & (outer == 0) & (contour == 0)
    in_side = near & (outer > 0) & (contour == 0)
    cv2.polylines(inner_line, [np.round(lm[_INNER]).astype(np.int32)], True, 1, 1)
    band = cv2.dilate(opening.astype(np.uint8), np.ones((9, 5), np.uint8)) > 0
    return dict(outer=outer > 0, opening=opening, tissue=(outer > 0) & ~opening, ring=ring,
                contour=contour > 0, out_side=out_side, in_side=in_side, inner_line=inner_line > 0, band=band)


def _line_kernels(n: int = 9) -> list[np.ndarray]:
    """Line structuring elements of length n at 0, 45, 90 and 135 degrees."""
    h = np.zeros((n, n), np.uint8)
    h[n // 2, :] = 1
    d = np.eye(n, dtype=np.uint8)
    return [h, h.T.copy(), d, d[::-1].copy()]


_LINES = _line_kernels()


def speck_map(rl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dark, light) speck strength per pixel: the black-hat (top-hat) residue left by closing (opening) with a
    line in every direction, the smallest of the four: a line or an edge survives the morphology along its own
    direction (residue 0 there), a spot smaller than the line survives none."""
    dark = np.min([cv2.morphologyEx(rl, cv2.MORPH_BLACKHAT, k) for k in _LINES], axis=0)
    light = np.min([cv2.morphologyEx(rl, cv2.MORPH_TOPHAT, k) for k in _LINES], axis=0)
    return dark, light


def _top_mean(x: np.ndarray, m: np.ndarray, n: int = 6) -> float:
    v = x[m]
    return float(np.sort(v)[-n:].mean()) if len(v) >= n else 0.0


def _q(x: np.ndarray, m: np.ndarray, q: float, default: float = 0.0) -> float:
    return float(np.quantile(x[m], q)) if m.sum() >= 3 else default


def _mean(x: np.ndarray, m: np.ndarray, default: float = 0.0) -> float:
    return float(x[m].mean()) if m.sum() >= 3 else default


FEATURES: tuple[str, ...] = (
    "open_q10", "open_q50", "open_q90", "open_q99", "lips_q50", "lips_q90", "bright_std", "grad_open", "grad_lips",
    "grad_ring", "grad_ring_q95", "edge_h_over_v", "outline_outer", "outline_inner", "specks_band", "grad_bright",
    "gx_bright", "impulse_light", "line_vs_lips", "speck_dark", "speck_light", "speck_dark_ring",
    *(f"vprofile_{k}" for k in range(VPROFILE_BINS)), "tint_a", "tint_b")
N_LUMA = len(FEATURES) - 2  # the last two are chroma features, zero on a corpus without colour


@dataclass(frozen=True)
class CanonicalMouth:
    """A face's mouth in the canonical frame: its CIELAB pixels, the region masks, and the luminance relative to
    the perioral skin's median (what makes the features comparable across exposures and skin tones)."""

    lab: np.ndarray  # (FRAME_H, FRAME_W, 3) float32
    masks: dict[str, np.ndarray]
    luminance: np.ndarray  # (FRAME_H, FRAME_W) float32
    landmarks: np.ndarray  # (68, 2) float64: the face's landmarks in the canonical frame


def canonical_mouth(rgb: np.ndarray, landmarks68: np.ndarray) -> CanonicalMouth:
    """The mouth of `rgb` warped to the canonical frame (mouth corners on _CORNERS), with its masks."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    m = _similarity(lm)
    crop = cv2.warpAffine(np.ascontiguousarray(rgb), m, (FRAME_W, FRAME_H), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)
    canonical = lm @ m[:, :2].T + m[:, 2]
    k = _masks(canonical)
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    raw_l = lab[..., 0]
    skin = max(float(np.median(raw_l[k["ring"]])) if k["ring"].any() else float(raw_l.mean()), 1.0)
    return CanonicalMouth(lab, k, raw_l / skin, canonical)


def mouth_descriptor(rgb: np.ndarray, landmarks68: np.ndarray, use_chroma: bool = True,
                     mouth: CanonicalMouth | None = None) -> np.ndarray:
    """The FEATURES of one face's mouth (float64 vector); the chroma features are 0 when use_chroma is False
    (`mouth`: the face's canonical_mouth, when the caller has it)."""
    mouth = mouth or canonical_mouth(rgb, landmarks68)
    k, lab, rl = mouth.masks, mouth.lab, mouth.luminance
    gx = cv2.Sobel(rl, cv2.CV_32F, 1, 0, ksize=3) / 4.0
    gy = cv2.Sobel(rl, cv2.CV_32F, 0, 1, ksize=3) / 4.0
    g = np.hypot(gx, gy)
    op, lips, ring = k["opening"], k["tissue"], k["ring"]
    bright = op & (rl >= _q(rl, op, 0.75, 0.0))
    local = rl - cv2.medianBlur(rl, 5)
    impulse = np.abs(local) > 0.15
    dark, light = speck_map(rl)
    core = cv2.erode(bright.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    centre = np.zeros_like(rl, bool)
    centre[:, int(FRAME_W * 0.4):int(FRAME_W * 0.6)] = True
    rows = np.array_split(np.arange(FRAME_H), VPROFILE_BINS)
    vprof = [float(np.median(rl[r][:, int(FRAME_W * 0.4):int(FRAME_W * 0.6)])) for r in rows]
    h_over_v = _mean(np.abs(gx), op) / max(_mean(np.abs(gy), op), 1e-3)
    chroma = [0.0, 0.0]
    if use_chroma:
        a, b = lab[..., 1] - 128.0, lab[..., 2] - 128.0
        c = np.hypot(a, b)
        skin_c = max(float(np.median(c[ring])) if ring.any() else 1.0, 1.0)
        sa, sb = (float(np.median(x[ring])) if ring.any() else 0.0 for x in (a, b))
        chroma = [(_mean(a, bright) - sa) / skin_c, (_mean(b, bright) - sb) / skin_c]
    feats = [
        _q(rl, op, 0.1), _q(rl, op, 0.5), _q(rl, op, 0.9), _q(rl, op, 0.99), _q(rl, lips, 0.5), _q(rl, lips, 0.9),
        float(rl[bright].std()) if bright.sum() >= 3 else 0.0,
        _mean(g, op), _mean(g, lips), _mean(g, ring), _q(g, ring, 0.95), h_over_v,
        _mean(rl, k["contour"]) - 0.5 * (_mean(rl, k["out_side"]) + _mean(rl, k["in_side"])),
        _mean(rl, k["inner_line"] & ~op) - _mean(rl, op) if (k["inner_line"] & ~op).sum() >= 3 else 0.0,
        _mean(impulse.astype(np.float32), k["band"]),
        _mean(g, core), _mean(np.abs(gx), core), _q(local, k["band"], 0.995),
        _mean(rl, k["inner_line"]) - _q(rl, lips, 0.5),
        _top_mean(dark, k["outer"] | k["band"]), _top_mean(light, k["outer"] | k["band"]), _top_mean(dark, ring),
        *vprof, *chroma]
    return np.asarray(feats, np.float64)


LIP_LINE_FEATURES: tuple[str, ...] = ("line_valley_median", "line_valley_q90", "line_peak_median")


def lip_line_profile(rgb: np.ndarray, landmarks68: np.ndarray, mouth: CanonicalMouth | None = None) -> np.ndarray:
    """LIP_LINE_FEATURES (float64), luminance only: along the middle 70 % of the mouth width, each column's darkest
    and lightest pixel within 3 px of the inner-lip line (the opening between the lips), relative to the lips'
    median (in units of the perioral skin); the median and 90th percentile over columns of the darkest, the median
    of the lightest. A real closed mouth's lip line is a dark valley in every column; a pale band between the lips
    (ghost teeth, a light strip) fills it, in colour and in grey alike (`mouth`: as for mouth_descriptor)."""
    mouth = mouth or canonical_mouth(rgb, landmarks68)
    c = mouth.landmarks
    rl, lips = mouth.luminance, mouth.masks["tissue"]
    ref = _q(rl, lips, 0.5, 1.0)
    top, bottom = c[[60, 61, 62, 63, 64]], c[[60, 67, 66, 65, 64]]
    xs = np.arange(int(_CORNERS[0, 0] + 0.15 * 64), int(_CORNERS[1, 0] - 0.15 * 64))
    y0 = np.interp(xs, *top[np.argsort(top[:, 0])].T)
    y1 = np.interp(xs, *bottom[np.argsort(bottom[:, 0])].T)
    lo, hi = [], []
    for x, a, b in zip(xs, np.minimum(y0, y1), np.maximum(y0, y1), strict=True):
        col = rl[int(np.clip(np.floor(a - 3), 0, FRAME_H - 1)):int(np.clip(np.ceil(b + 3), 1, FRAME_H)) + 1, x]
        lo.append(float(col.min()) - ref)
        hi.append(float(col.max()) - ref)
    return np.array([np.median(lo), np.quantile(lo, 0.9), np.median(hi)], np.float64)


def mouth_shape(landmarks68: np.ndarray) -> np.ndarray:
    """The 20 mouth landmarks in the canonical frame, centred, in mouth widths (40 values): what the mouth should
    look like (open, closed, smiling) follows from its shape, so real mouths of a similar shape are the reference."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    m = _similarity(lm)
    c = lm[48:68] @ m[:, :2].T + m[:, 2]
    return ((c - c.mean(axis=0)) / (_CORNERS[1, 0] - _CORNERS[0, 0])).ravel()


def _deviation(x: np.ndarray, shape: np.ndarray, bank: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """|x - the median descriptor of the K_NEIGHBOURS bank mouths nearest in shape|, per feature."""
    near = np.argsort(np.sum((shapes - shape) ** 2, axis=1))[:K_NEIGHBOURS]
    return np.abs(x - np.median(bank[near], axis=0))


@dataclass(frozen=True)
class RealMouthBank:
    """Descriptors and shapes of a corpus's real mouths, their identities, and each feature's deviation scale: the
    DEVIATION_QUANTILE of the real mouths' own deviations from their shape neighbours (other identities)."""

    descriptors: np.ndarray  # (n, len(FEATURES))
    shapes: np.ndarray  # (n, 40)
    identities: np.ndarray  # (n,) str
    use_chroma: bool

    def _others(self, exclude: tuple[str, ...]) -> np.ndarray:
        return ~np.isin(self.identities, list(exclude)) if exclude else np.ones(len(self.identities), bool)

    def real_deviations(self) -> np.ndarray:
        """Each real mouth's deviation from its shape neighbours among the other identities."""
        return np.array([_deviation(d, s, self.descriptors[o], self.shapes[o]) for d, s, o in zip(
            self.descriptors, self.shapes, (self.identities[:, None] != self.identities[None, :]), strict=True)])

    @cached_property
    def _real(self) -> tuple[np.ndarray, np.ndarray]:
        """(the real mouths' deviations, each feature's scale), computed once."""
        dev = self.real_deviations()
        return dev, np.maximum(np.quantile(dev, DEVIATION_QUANTILE, axis=0), 1e-3)

    def score(self, descriptor: np.ndarray, shape: np.ndarray, exclude: tuple[str, ...] = ()) -> float:
        """Realism distance of one mouth to the bank's mouths of identities not in `exclude`."""
        keep = self._others(exclude)
        if not keep.any():
            return 0.0
        return _top(_deviation(descriptor, shape, self.descriptors[keep], self.shapes[keep]) / self._real[1])

    def signed_deviation(self, descriptor: np.ndarray, shape: np.ndarray, exclude: tuple[str, ...] = ()) -> np.ndarray:
        """`descriptor` minus the median descriptor of its shape neighbours among identities not in `exclude`, in
        the feature scales (qc/mouth_detector.py's input; zeros when no other identity is left)."""
        keep = self._others(exclude)
        if not keep.any():
            return np.zeros(len(descriptor))
        near = np.argsort(np.sum((self.shapes[keep] - shape) ** 2, axis=1))[:K_NEIGHBOURS]
        return (np.asarray(descriptor) - np.median(self.descriptors[keep][near], axis=0)) / self._real[1]

    def held_out(self, identity: str) -> np.ndarray:
        """Every real mouth's score with the feature scales fitted without `identity`'s mouths (so that
        identity's scores are out of sample in every part)."""
        dev = self._real[0]
        sc = np.maximum(np.quantile(dev[self.identities != identity], DEVIATION_QUANTILE, axis=0), 1e-3)
        return np.array([_top(d / sc) for d in dev])

    def leave_one_identity_out(self) -> np.ndarray:
        """Each real mouth's score against the bank's other identities (out of sample)."""
        dev, sc = self._real
        return np.array([_top(d / sc) for d in dev])


def deviation_score(signed: np.ndarray) -> float:
    """The realism score of a signed deviation (RealMouthBank.signed_deviation): what `score` gives that mouth."""
    return _top(np.abs(np.asarray(signed, np.float64)))


def _top(z: np.ndarray) -> float:
    """Root mean square of the TOP_FEATURES largest values."""
    return float(np.sqrt(np.mean(np.sort(z)[::-1][:TOP_FEATURES] ** 2)))
