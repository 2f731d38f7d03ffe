"""Learned expression scores: 7-class probabilities of R, T and the carrier, their distances and R's gain.

The network is stages/face/expression_net.py (face-api's expression net rebuilt in numpy/onnx, hash-pinned).
Distances are total variation: 0.5 * sum |p - q|, in [0, 1]. The contrast with S (identity i in the other
expression) is measured in centred log-probabilities, where the net keeps its within-person ordering even when
its top class does not change (a slight smile it calls neutral still has a higher happy logit than the same
person's neutral photo).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages.face.learned_expression import LearnedExpression


def total_variation(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    a, b = np.asarray(p, np.float64).reshape(-1), np.asarray(q, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"probability vectors differ in length: {a.shape} vs {b.shape}")
    return float(0.5 * np.abs(a - b).sum())


LOG_PROBABILITY_FLOOR = 1e-6  # added before the log: classes the net all but rules out do not steer the axis


def centred_log_probabilities(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """log(p + floor) minus its mean: the net's logits up to the floor (softmax forgets a constant shift)."""
    v = np.log(np.asarray(p, np.float64).reshape(-1) + LOG_PROBABILITY_FLOOR)
    return v - v.mean()


def expression_contrast(r: Sequence[float] | np.ndarray, s: Sequence[float] | np.ndarray,
                        t: Sequence[float] | np.ndarray) -> float | None:
    """Where R lies on the axis from S's expression to T's, measured from their midpoint in centred
    log-probability units: > 0 R is nearer T's expression than S's, < 0 nearer S's. Equal to
    (|R-S|^2 - |R-T|^2) / (2 |T-S|). None when S and T have the same probabilities (no axis)."""
    lr, ls, lt = (centred_log_probabilities(x) for x in (r, s, t))
    axis = lt - ls
    length = float(np.linalg.norm(axis))
    if length < 1e-6:
        return None
    return float((lr - 0.5 * (ls + lt)) @ axis / length)


def expression_gain(d_rt: float, d_ct: float) -> float:
    """How much closer R is to T than the carrier was, relative to the carrier's distance: 1 = all the way,
    0 = no closer, clipped at -1 (R at least twice as far from T as the carrier)."""
    if d_ct <= 1e-9:
        return 0.0
    return float(max(-1.0, (d_ct - d_rt) / d_ct))


@dataclass(frozen=True)
class ExpressionScores:
    r_probs: list[float]
    t_probs: list[float]
    carrier_probs: list[float] | None
    s_probs: list[float] | None
    r_label: str
    t_label: str
    carrier_label: str | None
    dist_rt: float
    dist_ct: float | None
    dist_rc: float | None
    gain: float | None
    contrast_st: float | None


def expression_scores(net: LearnedExpression, r: np.ndarray, t: np.ndarray, carrier: np.ndarray | None,
                      s: np.ndarray | None = None) -> ExpressionScores:
    """Distances and gain from R's, T's and (optionally) the carrier's probability vectors; R's contrast on the
    S-to-T axis when S's are given."""
    d_rt = total_variation(r, t)
    d_ct = total_variation(carrier, t) if carrier is not None else None
    d_rc = total_variation(r, carrier) if carrier is not None else None
    return ExpressionScores(
        r_probs=[float(x) for x in r], t_probs=[float(x) for x in t],
        carrier_probs=[float(x) for x in carrier] if carrier is not None else None,
        s_probs=[float(x) for x in s] if s is not None else None,
        r_label=net.label(r), t_label=net.label(t),
        carrier_label=net.label(carrier) if carrier is not None else None, dist_rt=d_rt, dist_ct=d_ct,
        dist_rc=d_rc, gain=expression_gain(d_rt, d_ct) if d_ct is not None else None,
        contrast_st=expression_contrast(r, s, t) if s is not None else None)
