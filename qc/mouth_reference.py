"""R's mouth against its own reference: the artifacts R has and the photo it was made from does not.

A generated R's mouth is the expression transfer's mouth (identity_swap.keep_regions keeps it through the swap),
and the transfer re-poses the carrier, a real photo of j. So the carrier is R's reference: the same lips, skin and
lighting, in another expression. Specks, fragments, outlines, ghosted edges and slabs that R's mouth has beyond
its carrier's are what the generator added. The corpus-relative realism check (qc/mouth_realism.py) cannot see them:
a 1-2 px speck on a smooth generated mouth stays inside the spread of other people's real mouths.

`reference_features` measures, in the canonical mouth frame of qc/mouth_realism.py (luminance relative to the
perioral skin), the artifact features FEATURES on the lips and lip line, in the skin ring and along the outer lip
contour. The score (`ReferenceNull.score`): per feature, R's value minus the reference's, less the legit
difference's median, in units of its spread; the largest over the features (one artifact is enough).

The legit difference (the null) comes from the run's own sources, without labels: each real photo P of an
identity, resampled as the generator resamples every pixel it outputs (`resample_like_generation`: a bilinear
remap by a fractional offset, as the transfer's piecewise-affine warp does), is a legit R of that identity, and
another photo of the same identity (`reference_pairs`) is its reference, as the carrier is for a generated R.
qc/mouth_calibration.py fits the null and places the threshold at the real mouths' quantile its budget allows
(leave-one-identity-out for the reported flag rate).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from qc.mouth_realism import CanonicalMouth, canonical_mouth, speck_map

FEATURES: tuple[str, ...] = ("laplacian_lips", "impulse_lips", "dark_specks_lips", "light_specks_lips",
                             "outline_outer", "gradient_ring")
# Each feature's spread: this quantile of the legit differences' distance from their median.
SPREAD_QUANTILE = 0.9


def _q(x: np.ndarray, m: np.ndarray, q: float) -> float:
    return float(np.quantile(x[m], q)) if m.sum() >= 3 else 0.0


def _top_mean(x: np.ndarray, m: np.ndarray, n: int = 6) -> float:
    v = x[m]
    return float(np.sort(v)[-n:].mean()) if len(v) >= n else 0.0


def _mean(x: np.ndarray, m: np.ndarray) -> float:
    return float(x[m].mean()) if m.sum() >= 3 else 0.0


def reference_features(rgb: np.ndarray, landmarks68: np.ndarray, mouth: CanonicalMouth | None = None) -> np.ndarray:
    """FEATURES of one face's mouth (float64): high where a mouth has specks, fragments, an outline or edges
    (`mouth`: the face's canonical_mouth, when the caller has it)."""
    mouth = mouth or canonical_mouth(rgb, landmarks68)
    k, rl = mouth.masks, mouth.luminance
    zone = k["outer"] | k["band"]  # the lips and the lip line / opening
    dark, light = speck_map(rl)
    lap = np.abs(cv2.Laplacian(rl, cv2.CV_32F))
    impulse = np.abs(rl - cv2.medianBlur(rl, 5))
    g = np.hypot(cv2.Sobel(rl, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(rl, cv2.CV_32F, 0, 1, ksize=3)) / 4.0
    outline = 0.5 * (_mean(rl, k["out_side"]) + _mean(rl, k["in_side"])) - _mean(rl, k["contour"])
    return np.array([_q(lap, zone, 0.99), _q(impulse, zone, 0.995), _top_mean(dark, zone), _top_mean(light, zone),
                     outline, _mean(g, k["ring"])], np.float64)


def resample_like_generation(rgb: np.ndarray, key: str) -> np.ndarray:
    """`rgb` remapped bilinearly by a fractional offset drawn from `key` (the same on every call): what the
    transfer's warp does to every pixel of R, so that a real photo becomes a legit R."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    u, v = np.random.default_rng(seed).uniform(0.0, 1.0, 2)
    m = np.array([[1.0, 0.0, u], [0.0, 1.0, v]], np.float32)
    h, w = rgb.shape[:2]
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def reference_pairs(identities: np.ndarray, keys: list[str]) -> list[tuple[int, int]]:
    """(legit R, its reference): for each photo with another photo of its identity, one of those chosen by the hash
    of its key (deterministic, like the planner's carrier draw)."""
    ids = np.asarray(identities).astype(str)
    out = []
    for a, key in enumerate(keys):
        same = np.flatnonzero((ids == ids[a]) & (np.arange(len(ids)) != a))
        if len(same):
            pick = int(hashlib.sha256(f"reference\0{key}".encode()).hexdigest()[:8], 16) % len(same)
            out.append((a, int(same[pick])))
    return out


@dataclass(frozen=True)
class ReferenceNull:
    """The legit differences' median and spread per feature (R's features minus its reference's)."""

    median: np.ndarray
    spread: np.ndarray

    @classmethod
    def fit(cls, differences: np.ndarray) -> ReferenceNull:
        d = np.asarray(differences, np.float64).reshape(-1, len(FEATURES))
        med = np.median(d, axis=0) if len(d) else np.zeros(len(FEATURES))
        spread = np.quantile(np.abs(d - med), SPREAD_QUANTILE, axis=0) if len(d) else np.ones(len(FEATURES))
        return cls(med, np.maximum(spread, 1e-4))

    def scores(self, differences: np.ndarray) -> np.ndarray:
        """The score of each row of differences (R's features minus its reference's)."""
        d = np.asarray(differences, np.float64).reshape(-1, len(FEATURES))
        return np.max((d - self.median) / self.spread, axis=1)

    def score(self, r_features: np.ndarray, reference_features: np.ndarray) -> float:
        return float(self.scores(np.asarray(r_features) - np.asarray(reference_features))[0])

    def record(self) -> dict:
        return dict(features=list(FEATURES), median=[round(float(x), 6) for x in self.median],
                    spread=[round(float(x), 6) for x in self.spread])
