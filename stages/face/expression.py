"""Expression descriptor from 68 landmarks: scale-free mouth/eye/brow measures in an eye-normalised frame.

The landmarks are similarity-aligned (eye centres at (-0.5, 0) and (0.5, 0)), so every measure is in units of
the inter-ocular distance. expression_distance is a weighted Euclidean distance (WEIGHTS, sum 1).

Measured on the London set (102 identities, dlib 68 landmarks on FFHQ-aligned 256 px crops;
`python -m tests.face.measure_london --triples 60`):

    pairs                                          n       median   p5      p95
    same expression, different identity        10302      0.061    0.029   0.130
    neutral vs smiling, same identity            102      0.081    0.022   0.176
    different expression, different identity  10302      0.099    0.040   0.187
    R vs T (landmark_warp + classic_swap)         60      0.059    0.036   0.119   (max 0.140)
    carrier vs T (before transfer)                60      0.102    0.038   0.194

Separation is limited: landmarks mix expression with face shape (mouth width varies between people by about
half the neutral-to-smile change) and several London "smiling" photos are barely smiling. Mouth width alone
is the best single feature (pair AUC 0.72); the weighted descriptor reaches 0.65 (neutral/smiling of one
person vs same expression of two people) and 0.74 (different vs same expression, different people), while
still responding to eyes and brows. Delta transfer keeps the carrier's face shape, so R vs T is distributed
like "same expression, different identity".

Threshold (qc.expression.max_distance): 0.12 keeps 95% of transfers (R vs T) and 92% of same-expression
pairs, and rejects 43% of unchanged carriers (expression lost) and 38% of different-expression pairs;
0.10 is stricter (88% kept, 53% of unchanged carriers rejected).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DESCRIPTOR_NAMES: tuple[str, ...] = (
    "mouth_width",  # outer corner to corner (48-54)
    "inner_mouth_width",  # inner-lip corners (60-64)
    "outer_lip_opening",  # 51 to 57
    "inner_lip_opening",  # mean of 61/62/63 to 67/66/65
    "mouth_aspect",  # inner_lip_opening / mouth_width
    "corner_lift_inner",  # inner-lip midline height minus mouth-corner height (> 0: corners up)
    "corner_lift_outer",  # outer-lip midline height minus mouth-corner height
    "upper_lip_thickness",  # 51 to 62
    "lower_lip_thickness",  # 66 to 57
    "left_eye_aspect",  # image-left eye (36-41) height / width
    "right_eye_aspect",  # image-right eye (42-47)
    "left_brow_height",  # brow 17-21 mean above eye 36-41 mean
    "right_brow_height",  # brow 22-26 mean above eye 42-47 mean
    "inner_brow_distance",  # 21 to 22
    "left_corner_to_eye",  # 48 to the image-left eye centre
    "right_corner_to_eye",  # 54 to the image-right eye centre
    "nose_to_upper_lip",  # 33 to 51, vertical
    "mouth_corner_drop",  # mouth-corner height below the nose tip (33)
)

# name -> (relevance, between-identity standard deviation of the feature on the London set). The weight of a
# feature is relevance / sd**2, normalised to sum to 1: each feature is measured in units of how much it varies
# between people, then scaled by how much it says about expression. Mouth width and corner lift carry the
# neutral/smile signal; eyes and brows get a small weight so other expressions (surprise, frown) still count;
# features that mostly encode face shape (lip thickness, mouth position) get almost none.
_WEIGHTING: dict[str, tuple[float, float]] = {
    "mouth_width": (1.0, 0.0671),
    "inner_mouth_width": (1.0, 0.0648),
    "outer_lip_opening": (0.02, 0.0770),
    "inner_lip_opening": (0.2, 0.0564),
    "mouth_aspect": (0.2, 0.0576),
    "corner_lift_inner": (0.5, 0.0403),
    "corner_lift_outer": (0.5, 0.0439),
    "upper_lip_thickness": (0.02, 0.0231),
    "lower_lip_thickness": (0.02, 0.0279),
    "left_eye_aspect": (0.1, 0.0423),
    "right_eye_aspect": (0.1, 0.0437),
    "left_brow_height": (0.1, 0.0445),
    "right_brow_height": (0.1, 0.0434),
    "inner_brow_distance": (0.1, 0.0541),
    "left_corner_to_eye": (0.02, 0.0658),
    "right_corner_to_eye": (0.02, 0.0666),
    "nose_to_upper_lip": (0.02, 0.0425),
    "mouth_corner_drop": (0.02, 0.0648),
}
_w = np.array([_WEIGHTING[n][0] / _WEIGHTING[n][1] ** 2 for n in DESCRIPTOR_NAMES], dtype=np.float64)
WEIGHTS: np.ndarray = _w / _w.sum()
WEIGHTS.setflags(write=False)
del _w


def normalise_landmarks(landmarks68: np.ndarray) -> np.ndarray:
    """Similarity-align 68 points: eye centres at (-0.5, 0) and (0.5, 0), y pointing down the face."""
    lm = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    el = lm[36:42].mean(axis=0)
    er = lm[42:48].mean(axis=0)
    d = er - el
    iod = float(np.hypot(*d))
    if not np.isfinite(iod) or iod < 1e-6:
        raise ValueError("degenerate landmarks: the eye centres coincide")
    u = d / iod
    v = np.array([-u[1], u[0]])
    c = (el + er) * 0.5
    rel = lm - c
    return np.stack([rel @ u, rel @ v], axis=1) / iod


def _eye_aspect(e: np.ndarray) -> float:
    width = np.hypot(*(e[3] - e[0]))
    height = np.hypot(*(e[1] - e[5])) + np.hypot(*(e[2] - e[4]))
    return float(height / (2.0 * max(width, 1e-6)))


def expression_descriptor(landmarks68: np.ndarray) -> np.ndarray:
    """(len(DESCRIPTOR_NAMES),) float32 expression measures, in units of the inter-ocular distance."""
    p = normalise_landmarks(landmarks68)
    y = p[:, 1]
    el, er = p[36:42].mean(axis=0), p[42:48].mean(axis=0)
    corner_y = (y[48] + y[54]) * 0.5
    width = float(np.hypot(*(p[54] - p[48])))
    inner_open = float(y[65:68].mean() - y[61:64].mean())
    f = [
        width,
        np.hypot(*(p[64] - p[60])),
        y[57] - y[51],
        inner_open,
        inner_open / max(width, 1e-6),
        (y[62] + y[66]) * 0.5 - corner_y,
        (y[51] + y[57]) * 0.5 - corner_y,
        y[62] - y[51],
        y[57] - y[66],
        _eye_aspect(p[36:42]),
        _eye_aspect(p[42:48]),
        y[36:42].mean() - y[17:22].mean(),
        y[42:48].mean() - y[22:27].mean(),
        np.hypot(*(p[22] - p[21])),
        np.hypot(*(p[48] - el)),
        np.hypot(*(p[54] - er)),
        y[51] - y[33],
        corner_y - y[33],
    ]
    return np.asarray(f, dtype=np.float32)


def expression_distance(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                        weights: np.ndarray | None = None) -> float:
    """Weighted Euclidean distance between two expression descriptors (WEIGHTS unless given)."""
    va = np.asarray(a, dtype=np.float64).reshape(-1)
    vb = np.asarray(b, dtype=np.float64).reshape(-1)
    if va.shape != vb.shape or va.shape[0] != len(DESCRIPTOR_NAMES):
        raise ValueError(f"descriptors must have length {len(DESCRIPTOR_NAMES)}, got {va.shape} and {vb.shape}")
    w = WEIGHTS if weights is None else np.asarray(weights, dtype=np.float64)
    return float(np.sqrt(np.sum(w * (va - vb) ** 2)))
