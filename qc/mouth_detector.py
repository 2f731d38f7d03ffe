"""Mouth-damage detector fitted per run on the run's own real mouths against synthetic damage made from them.

Self-supervised, no labels: every sampled real photo that has another photo of its identity is a legit R
(resampled as the generator resamples, qc/mouth_reference.py) with that other photo as its reference; the same
legit R with one synthetic artifact painted on (qc/artifact_cases.py: ghost teeth, seam, blur, slab, outline,
tinted strip, stretched teeth, specks, ring, white band; the kind drawn from the hash of the photo's key) is a
damaged one. A ridge-regularised logistic regression separates the two on `detector_inputs`:
- R's mouth descriptor (qc/mouth_realism.py) minus the median of the real mouths nearest in shape (other
  identities), in the bank's feature scales, signed (what a real mouth of that shape looks like);
- R's artifact features minus its reference's (qc/mouth_reference.py FEATURES);
- R's single-face mouth scores (qc/mouth.py: opening, teeth share, lip-line whiteness, seam, sharpness ratio);
- R's lip-line profile (qc/mouth_realism.py lip_line_profile, luminance only: a pale band between closed lips).
Every damage kind weighs the same in the fit (a kind that fits fewer mouths, e.g. ghost teeth on closed ones
only, is not outvoted).
Each input is centred on the real mouths' median and scaled by their spread, and its magnitude is a second input
(an artifact may push a feature either way). The score is the fitted log-odds of damage; qc/mouth_calibration.py
sets its threshold from the real mouths' out-of-fold scores (folds of whole identities), so the real flag rate it
reports is out of sample. The damage kinds are the ones the benchmark measures: benchmarks/bench_mouth_checks.py
also reports recall with each kind left out of the fit (how the detector does on an artifact it never saw).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from qc import artifact_cases as ac
from qc.mouth import mouth_scores
from qc.mouth_realism import FEATURES as REALISM_FEATURES
from qc.mouth_realism import (
    LIP_LINE_FEATURES,
    RealMouthBank,
    canonical_mouth,
    lip_line_profile,
    mouth_descriptor,
    mouth_shape,
)
from qc.mouth_reference import FEATURES as REFERENCE_FEATURES
from qc.mouth_reference import reference_features, resample_like_generation

DAMAGE_KINDS: tuple[str, ...] = ("ghost_teeth", "seam", "blur", *ac.DAMAGE)
RIDGE = 10.0  # L2 penalty of the logistic regression (chosen on London colour and grey, see RESULTS.md)
N_FOLDS = 10  # identity folds for the out-of-fold real scores
_ITERATIONS = 40


# detector_inputs' columns that hold R's qc/mouth_reference.py features minus its reference's
REFERENCE_INPUTS = slice(len(REALISM_FEATURES), len(REALISM_FEATURES) + len(REFERENCE_FEATURES))


def detector_inputs(deviation: np.ndarray, reference_diff: np.ndarray, aspect: float, teeth: float,
                    lip_line: float, seam: float, sharpness_ratio: float, lip_line_profile: np.ndarray) -> np.ndarray:
    """One R's raw detector inputs (float64): its signed descriptor deviation from real mouths of its shape, its
    artifact features minus its reference's, its single-face mouth scores and its lip-line profile
    (qc/mouth_realism.py LIP_LINE_FEATURES)."""
    return np.concatenate([np.asarray(deviation, np.float64), np.asarray(reference_diff, np.float64),
                           np.array([aspect, teeth, lip_line, seam, sharpness_ratio], np.float64),
                           np.asarray(lip_line_profile, np.float64)])


def _seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"damage\0{key}".encode()).digest()[:8], "little")


def damage_kind(key: str, is_open: bool, is_closed: bool) -> str:
    """The artifact painted on the legit R with this key (drawn from its hash among the kinds that fit the
    mouth: ghost teeth on closed mouths, stretched teeth and white bands on open ones)."""
    fits = [k for k in DAMAGE_KINDS if not (k == "ghost_teeth" and not is_closed)
            and not (k in ac.DAMAGE and ac.DAMAGE[k][1] and not is_open)]
    return fits[_seed(key) % len(fits)]


def paint_damage(kind: str, rgb: np.ndarray, landmarks68: np.ndarray, key: str, teeth_donor: tuple | None,
                 other_face: np.ndarray) -> np.ndarray:
    """`rgb` with one artifact of `kind` (strength drawn from the key); teeth_donor: (RGB, landmarks) of an open
    mouth with teeth (ghost teeth), other_face: another identity's aligned face (seam)."""
    rng = np.random.default_rng(_seed(key) // 7)
    if kind == "ghost_teeth" and teeth_donor is not None:
        return ac.ghost_teeth(rgb, landmarks68, teeth_donor[0], teeth_donor[1], float(rng.uniform(0.4, 0.7)))
    if kind == "seam":
        return ac.seam(rgb, landmarks68, other_face, gain=float(rng.uniform(0.85, 1.15)))
    if kind in ac.DAMAGE:
        return ac.DAMAGE[kind][0](rgb, landmarks68, rng)
    return ac.blur(rgb, landmarks68, float(rng.uniform(0.025, 0.05)))


def _expand(x: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = np.clip((np.asarray(x, np.float64).reshape(-1, len(centre)) - centre) / scale, -20.0, 20.0)
    return np.hstack([z, np.abs(z), np.ones((len(z), 1))])


def _logistic(x: np.ndarray, y: np.ndarray, ridge: float, weight: np.ndarray | None = None) -> np.ndarray:
    """Ridge logistic regression by Newton's method (the last column of x is the intercept, not penalised), each
    row's loss times `weight` (default 1)."""
    weight = np.ones(len(y)) if weight is None else weight
    d = x.shape[1]
    pen = ridge * np.eye(d)
    pen[-1, -1] = 0.0
    w = np.zeros(d)
    for _ in range(_ITERATIONS):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        hess = (x * (weight * p * (1 - p))[:, None]).T @ x + pen + 1e-6 * np.eye(d)
        step = np.linalg.solve(hess, x.T @ (weight * (p - y)) + pen @ w)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    return w


@dataclass(frozen=True)
class MouthDetector:
    """The fitted detector: the real inputs' median and spread per input, and the logistic weights."""

    centre: np.ndarray
    scale: np.ndarray
    weights: np.ndarray

    @classmethod
    def fit(cls, real: np.ndarray, damaged: np.ndarray, ridge: float = RIDGE,
            kinds: np.ndarray | None = None) -> MouthDetector:
        """Fitted on raw inputs of legit R (real) and damaged R (kinds: each damaged row's kind; given, every kind
        weighs the same in the fit, the damaged rows together as much as they count)."""
        real = np.asarray(real, np.float64)
        centre = np.median(real, axis=0)
        scale = np.maximum(np.quantile(np.abs(real - centre), 0.75, axis=0), 1e-6)
        x = np.vstack([_expand(real, centre, scale), _expand(damaged, centre, scale)])
        y = np.r_[np.zeros(len(real)), np.ones(len(damaged))]
        weight = np.ones(len(y))
        if kinds is not None and len(kinds):
            _, inverse, counts = np.unique(kinds, return_inverse=True, return_counts=True)
            weight[len(real):] = len(kinds) / (len(counts) * counts[inverse])
        return cls(centre, scale, _logistic(x, y, ridge, weight))

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """The log-odds of damage of each row of raw inputs."""
        return _expand(inputs, self.centre, self.scale) @ self.weights

    def record(self) -> dict:
        return dict(inputs=len(self.centre), ridge=RIDGE, damage_kinds=list(DAMAGE_KINDS))


def identity_fold(identity: str) -> int:
    """The identity's fold among N_FOLDS folds of whole identities (by the hash of the identity)."""
    return int(hashlib.sha256(str(identity).encode()).hexdigest()[:8], 16) % N_FOLDS


def identity_folds(identities: np.ndarray) -> np.ndarray:
    """identity_fold of each identity, as int64."""
    return np.array([identity_fold(i) for i in identities], np.int64)


@dataclass(frozen=True)
class DetectorSamples:
    """Raw inputs of the run's legit R and of their damaged copies, row by row (the same base photo)."""

    real: np.ndarray  # (n, d)
    damaged: np.ndarray  # (n, d)
    kinds: np.ndarray  # (n,) str: the artifact painted on each damaged copy
    identities: np.ndarray  # (n,) str: the base photo's identity

    def fit(self, keep: np.ndarray | None = None, without_kind: str | None = None) -> MouthDetector:
        """The detector fitted on the rows in `keep` (default all), damaged copies of `without_kind` left out."""
        keep = np.ones(len(self.real), bool) if keep is None else keep
        sel = keep & (self.kinds != without_kind)
        return MouthDetector.fit(self.real[keep], self.damaged[sel], kinds=self.kinds[sel])

    def folds(self) -> np.ndarray:
        """Each row's identity fold (identity_fold)."""
        return identity_folds(self.identities)

    def out_of_fold(self, without_kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(real, damaged) scores, each row scored by the detector fitted without its identity's fold."""
        f = self.folds()
        real, damaged = np.full(len(self.real), np.nan), np.full(len(self.real), np.nan)
        for k in np.unique(f):
            det = self.fit(f != k, without_kind)
            real[f == k] = det.scores(self.real[f == k])
            damaged[f == k] = det.scores(self.damaged[f == k])
        return real, damaged


OPEN_ASPECT, CLOSED_ASPECT = 0.12, 0.06  # qc.mouth's open_aspect / closed_aspect defaults: where kinds fit


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def _pick(candidates: np.ndarray, key: str) -> int | None:
    if not len(candidates):
        return None
    return int(candidates[int(hashlib.sha256(f"donor\0{key}".encode()).hexdigest()[:8], 16) % len(candidates)])


def r_inputs(rgb: np.ndarray, landmarks68: np.ndarray, bank: RealMouthBank, exclude: tuple[str, ...],
             reference: np.ndarray) -> np.ndarray:
    """The raw detector inputs of one R (`reference`: its reference's qc/mouth_reference.py features)."""
    s = mouth_scores(rgb, landmarks68)
    mouth = canonical_mouth(rgb, landmarks68)  # warped once for the three measures
    dev = bank.signed_deviation(mouth_descriptor(rgb, landmarks68, bank.use_chroma, mouth), mouth_shape(landmarks68),
                                exclude)
    return detector_inputs(dev, reference_features(rgb, landmarks68, mouth) - reference, s.mouth_aspect,
                           s.teeth_share, s.lip_line_whiteness, s.seam_score, s.sharpness_ratio,
                           lip_line_profile(rgb, landmarks68, mouth))


def measure_samples(faces: list[tuple[str, np.ndarray, np.ndarray]], keys: list[str], pairs: np.ndarray,
                    bank: RealMouthBank, aspect: np.ndarray, teeth: np.ndarray,
                    refs: dict[int, np.ndarray]) -> DetectorSamples:
    """The legit R of every pair (a resampled as the generator resamples, b its reference) and its damaged copy,
    as raw detector inputs (refs: each reference photo's qc/mouth_reference.py features, by face index); a corpus
    without colour gets grey damage."""
    ids = np.array([f[0] for f in faces]).astype(str)
    donors = np.flatnonzero((aspect >= OPEN_ASPECT) & (teeth > 0.05))
    real, damaged, kinds = [], [], []
    for a, b in pairs.tolist():
        ident, lm, key = ids[a], faces[a][2], keys[a]
        legit = resample_like_generation(faces[a][1], key)
        real.append(r_inputs(legit, lm, bank, (ident,), refs[b]))
        donor = _pick(donors, key)
        kind = damage_kind(key, aspect[a] >= OPEN_ASPECT, aspect[a] < CLOSED_ASPECT and donor is not None)
        other = _pick(np.flatnonzero(ids != ident), key)
        img = paint_damage(kind, legit, lm, key, None if donor is None else faces[donor][1:],
                           faces[other if other is not None else a][1])
        damaged.append(r_inputs(img if bank.use_chroma else _grey(img), lm, bank, (ident,), refs[b]))
        kinds.append(kind)
    d = len(REALISM_FEATURES) + len(REFERENCE_FEATURES) + 5 + len(LIP_LINE_FEATURES)
    return DetectorSamples(np.array(real).reshape(-1, d), np.array(damaged).reshape(-1, d), np.array(kinds, str),
                           ids[pairs[:, 0]] if len(pairs) else np.array([], str))
