"""The expression decision calibrated per run and per class, from the run's own labelled sources.

Each photo is described by the expression net's centred log-probabilities and the landmark expression descriptor,
both made *identity-relative*: minus the identity's class-balanced mean (the mean over its expression classes of
the mean of each class's photos). A person's face shape and resting expression then cancel, and what is left is
how this photo departs from the person's average face. A linear discriminant over these features (within-class
covariance shrunk by the Ledoit-Wolf intensity estimated from the run's own photos: no tuned constant) gives, for a
photo and an expression class e, the log-odds that the photo shows e.

Thresholds are set per class e from *out-of-sample* scores (leave-one-identity-out: the discriminant that scores
identity k's photos was fitted without k): the split-conformal quantile of the scores of photos of every other
class, so that at most `max_false_pass` of wrong-expression photos pass (Conformal Alignment, arXiv 2405.10301).
A class whose right-expression pass rate at that threshold is below `min_class_recall`, or that has too few
labelled photos or identities to certify, is unjudgeable on this corpus.

At QC time a generated R of identity j is scored the same way: its features minus j's class-balanced mean (R is
not among j's sources, as a real photo of j is among them here; both give the same vector when R shows one of
j's expressions exactly), and compared with the threshold of T's class.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from qc.expression_score import LOG_PROBABILITY_FLOOR

CALIBRATION_VERSION = 1


def photo_features(probs: np.ndarray, descriptors: np.ndarray) -> np.ndarray:
    """(n, 7 + D): centred log-probabilities of the expression net, then the landmark descriptor."""
    p = np.log(np.asarray(probs, np.float64) + LOG_PROBABILITY_FLOOR)
    p -= p.mean(axis=1, keepdims=True)
    return np.hstack([p, np.asarray(descriptors, np.float64)])


def balanced_means(identities: np.ndarray, labels: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """identity -> mean over its labels of the mean feature vector of that label's photos."""
    out: dict[str, np.ndarray] = {}
    order = np.argsort(identities, kind="stable")
    ids, starts = np.unique(identities[order], return_index=True)
    for ident, rows in zip(ids, np.split(order, starts[1:]), strict=True):
        means = [x[rows[labels[rows] == lab]].mean(axis=0) for lab in np.unique(labels[rows])]
        out[str(ident)] = np.mean(means, axis=0)
    return out


def identity_relative(identities: np.ndarray, labels: np.ndarray, x: np.ndarray,
                      reference: np.ndarray | None = None) -> np.ndarray:
    """x minus its identity's class-balanced mean over the `reference` rows (a mask; default all); an identity
    with fewer than two reference photos keeps x minus the reference rows' mean."""
    ref = np.ones(len(x), bool) if reference is None else np.asarray(reference, bool)
    means = balanced_means(identities[ref], labels[ref], x[ref])
    counts = dict(zip(*np.unique(identities[ref], return_counts=True), strict=True))
    fallback = x[ref].mean(axis=0) if ref.any() else (x.mean(axis=0) if len(x) else np.zeros(x.shape[1]))
    return np.stack([x[k] - (means[str(i)] if counts.get(i, 0) > 1 else fallback)
                     for k, i in enumerate(identities)]) if len(x) else x.copy()


def ledoit_wolf_intensity(residuals: np.ndarray) -> float:
    """The Ledoit-Wolf (2004) shrinkage intensity of the covariance of centred `residuals` (n, p) towards its mean
    variance times the identity, in [0, 1]."""
    n, p = residuals.shape
    if n < 2:
        return 1.0
    cov = residuals.T @ residuals / n
    target = np.eye(p) * np.trace(cov) / p
    d2 = float(np.sum((cov - target) ** 2))
    # sum over rows of ||x x^T - cov||^2, expanded so that no (n, p, p) array is made
    norms2 = np.sum(residuals ** 2, axis=1)
    b2 = float(np.sum(norms2 ** 2) - 2 * np.einsum("ni,ij,nj->", residuals, cov, residuals)
               + n * np.sum(cov ** 2)) / n ** 2
    return 1.0 if d2 <= 0 else min(b2, d2) / d2


@dataclass(frozen=True)
class Discriminant:
    """LDA: standardise, shared within-class covariance shrunk (Ledoit-Wolf) towards its mean variance."""

    classes: tuple[str, ...]
    centre: np.ndarray
    scale: np.ndarray
    means: np.ndarray  # (classes, dim), standardised
    precision: np.ndarray  # inverse shrunk within-class covariance

    @classmethod
    def fit(cls, z: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> Discriminant:
        present = tuple(c for c in classes if (labels == c).any())
        centre = z.mean(axis=0)
        scale = z.std(axis=0) + 1e-9
        zs = (z - centre) / scale
        means = np.stack([zs[labels == c].mean(axis=0) for c in present])
        residuals = np.vstack([zs[labels == c] - m for c, m in zip(present, means, strict=True)])
        shrinkage = ledoit_wolf_intensity(residuals)
        within = residuals.T @ residuals / max(len(zs) - len(present), 1)
        shrunk = (1 - shrinkage) * within + shrinkage * np.eye(len(within)) * np.trace(within) / len(within)
        return cls(present, centre, scale, means, np.linalg.inv(shrunk))

    def log_odds(self, z: np.ndarray) -> np.ndarray:
        """(n, len(classes)) log-odds of each class (equal priors)."""
        zs = (np.atleast_2d(z) - self.centre) / self.scale
        lin = zs @ self.precision @ self.means.T - 0.5 * np.einsum("cd,de,ce->c", self.means, self.precision,
                                                                     self.means)
        lin -= lin.max(axis=1, keepdims=True)
        post = np.exp(lin)
        post /= post.sum(axis=1, keepdims=True)
        post = np.clip(post, 1e-12, 1 - 1e-12)
        return np.log(post) - np.log1p(-post)

    def to_dict(self) -> dict:
        return dict(classes=list(self.classes), centre=self.centre.tolist(), scale=self.scale.tolist(),
                    means=self.means.tolist(), precision=self.precision.tolist())

    @classmethod
    def from_dict(cls, d: dict) -> Discriminant:
        return cls(tuple(d["classes"]), *(np.asarray(d[k], np.float64) for k in ("centre", "scale", "means",
                                                                                  "precision")))


def out_of_sample_scores(z: np.ndarray, labels: np.ndarray, identities: np.ndarray,
                         classes: Sequence[str]) -> np.ndarray:
    """(n, len(classes)) log-odds of every photo from a discriminant fitted without its identity (NaN for a class
    the other identities never show)."""
    out = np.full((len(z), len(classes)), np.nan)
    for ident in np.unique(identities):
        held = identities == ident
        if held.all():
            continue
        model = Discriminant.fit(z[~held], labels[~held], classes)
        scores = model.log_odds(z[held])
        for k, c in enumerate(model.classes):
            out[held, list(classes).index(c)] = scores[:, k]
    return out


def conformal_threshold(negative_scores: np.ndarray, max_false_pass: float) -> float:
    """The smallest threshold t (pass: score >= t) with a split-conformal guarantee that a new wrong-expression
    photo passes with probability <= max_false_pass: just above the ceil((n+1)(1-alpha))-th smallest negative
    score; +inf when there are too few negatives for that guarantee."""
    neg = np.sort(np.asarray(negative_scores, np.float64))
    rank = int(np.ceil((len(neg) + 1) * (1 - max_false_pass)))
    return float(np.nextafter(neg[rank - 1], np.inf)) if rank <= len(neg) else float("inf")


@dataclass(frozen=True)
class ClassCalibration:
    label: str
    judged: bool
    threshold: float | None  # R passes when its log-odds for this class reach it; None: no threshold exists
    photos: int
    identities: int
    why_not: str | None = None  # why the class is unjudgeable


@dataclass(frozen=True)
class ExpressionCalibration:
    """The fitted model of a run: discriminant, per-class thresholds, and what it was fitted on."""

    model: Discriminant | None
    classes: tuple[ClassCalibration, ...]
    max_false_pass: float
    min_class_recall: float
    photos: int
    identities: int
    out_of_sample: dict = field(default_factory=dict)  # label -> (right pass, wrong pass) measured LOIO

    def thresholds(self, judge_unjudgeable: bool = False) -> dict[str, float | None]:
        """label -> threshold (what qc rows record); None for an unjudgeable class unless the user opted in to
        judge those with their threshold anyway (qc.expression.judge_unjudgeable)."""
        return {c.label: (c.threshold if c.judged or judge_unjudgeable else None) for c in self.classes}

    def unjudgeable(self) -> list[str]:
        return [c.label for c in self.classes if not c.judged]

    def to_dict(self) -> dict:
        return dict(version=CALIBRATION_VERSION, model=self.model.to_dict() if self.model else None,
                    classes=[asdict(c) for c in self.classes], max_false_pass=self.max_false_pass,
                    min_class_recall=self.min_class_recall, photos=self.photos, identities=self.identities,
                    out_of_sample=self.out_of_sample)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def score(self, r_features: np.ndarray, j_mean: np.ndarray | None, label: str) -> float | None:
        """R's log-odds for `label`, R's features taken relative to j's class-balanced mean."""
        if self.model is None or label not in self.model.classes:
            return None
        z = np.asarray(r_features, np.float64) - (j_mean if j_mean is not None else 0.0)
        return float(self.model.log_odds(z)[0, self.model.classes.index(label)])


def fit_expression_calibration(identities: Sequence[str], labels: Sequence[str], probs: np.ndarray,
                               descriptors: np.ndarray, *, max_false_pass: float, min_class_recall: float,
                               min_class_photos: int, min_class_identities: int) -> ExpressionCalibration:
    """Fit on labelled photos (identity, expression label, net probabilities, landmark descriptor)."""
    return fit_with_evidence(identities, labels, probs, descriptors, max_false_pass=max_false_pass,
                             min_class_recall=min_class_recall, min_class_photos=min_class_photos,
                             min_class_identities=min_class_identities)[0]


def fit_with_evidence(identities: Sequence[str], labels: Sequence[str], probs: np.ndarray, descriptors: np.ndarray,
                      *, max_false_pass: float, min_class_recall: float, min_class_photos: int,
                      min_class_identities: int) -> tuple[ExpressionCalibration, np.ndarray]:
    """The calibration and the out-of-sample log-odds it was set from ((n, classes), NaN where none)."""
    ident, lab = np.asarray(identities, dtype=object).astype(str), np.asarray(labels, dtype=object).astype(str)
    classes = tuple(sorted(set(lab.tolist())))
    n = len(ident)
    if n == 0 or len(classes) < 2 or len(set(ident.tolist())) < 2:
        why0 = "fewer than two labelled expressions or identities: nothing to calibrate on"
        return ExpressionCalibration(None, tuple(ClassCalibration(c, False, None, int((lab == c).sum()),
                                                                   len(set(ident[lab == c])), why0) for c in classes),
                                     max_false_pass, min_class_recall, n, len(set(ident.tolist()))), \
            np.full((n, len(classes)), np.nan)
    z = identity_relative(ident, lab, photo_features(probs, descriptors))
    scores = out_of_sample_scores(z, lab, ident, classes)
    out = []
    measured: dict[str, list[float]] = {}
    for k, c in enumerate(classes):
        pos, neg = scores[lab == c, k], scores[lab != c, k]
        pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
        photos, people = int((lab == c).sum()), len(set(ident[lab == c].tolist()))
        thr = conformal_threshold(neg, max_false_pass) if len(neg) else float("inf")
        right = float(np.mean(pos >= thr)) if len(pos) else 0.0
        wrong = float(np.mean(neg >= thr)) if len(neg) else 0.0
        measured[c] = [right, wrong]
        why: str | None = None
        if photos < min_class_photos or people < min_class_identities:
            why = (f"{photos} labelled photos of {people} identities: fewer than {min_class_photos} photos or "
                   f"{min_class_identities} identities to certify")
        elif not np.isfinite(thr):
            why = f"too few photos of other expressions ({len(neg)}) for a {max_false_pass:g} false-pass guarantee"
        elif right < min_class_recall:
            why = (f"right-expression pass rate {right:.2f} at the threshold that keeps wrong ones at "
                   f"{max_false_pass:g}: below qc.expression.min_class_recall {min_class_recall:g}")
        out.append(ClassCalibration(c, why is None, thr if np.isfinite(thr) else None, photos, people, why))
    return ExpressionCalibration(Discriminant.fit(z, lab, classes), tuple(out), max_false_pass, min_class_recall,
                                 n, len(set(ident.tolist())), measured), scores
