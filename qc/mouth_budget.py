"""The mouth checks' thresholds from one shared budget: a conformal threshold on the largest normalised score.

Every mouth check c has, per real mouth, an out-of-sample score (NaN where the check does not apply: ghost teeth
on open mouths, the reference check without a reference). Each score is normalised by its real values: 0 at their
median, 1 at their quantile ANCHOR x share_c from the tail (share_c: the check's weight in SHARES; "min" checks
mirrored), so that the checks' tails are on one scale. A mouth's joint score is the largest normalised score;
the level is the k-th smallest joint score of the n real mouths, k = ceil((n + 1)(1 - target)): a new real mouth,
exchangeable with them, has a joint score above it with probability at most `target` (split-conformal), i.e. it is
flagged by any check at most that often. Each check's threshold is its score at that level, so the decision stays
one threshold per check (qc/decide.py DECIDING_CHECKS). This replaces a fixed split of the budget with a safety
margin per check (which left 3/4 of the budget unused): how the budget is spent follows the checks' real tails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# each check's weight: where its normaliser sits (its ANCHOR x share tail), so how much of the budget it may take
SHARES = {"detector": 0.4, "realism": 0.15, "reference": 0.15, "ghost_teeth": 0.05, "ghost_lip_line": 0.05,
          "seam": 0.1, "blur": 0.1}
ANCHOR = 0.25


@dataclass(frozen=True)
class ScoreTail:
    """One check's real out-of-sample scores (NaN: not applicable) and its rule ("max" or "min")."""

    values: np.ndarray
    rule: str = "max"


def _normaliser(values: np.ndarray, rule: str, share: float) -> tuple[float, float]:
    """(median, anchor - median) of the applicable values, mirrored for a "min" check."""
    v = values[~np.isnan(values)]
    if not len(v):
        return 0.0, 1.0
    x = v if rule == "max" else -v
    med = float(np.median(x))
    anchor = float(np.quantile(x, 1.0 - min(ANCHOR * share, 0.5)))
    return med, max(anchor - med, 1e-9)


def conformal_rank(n: int, target: float) -> int:
    """k = ceil((n + 1)(1 - target)), the rank of the level among n joint scores (n + 1 > n: no level)."""
    return math.ceil((n + 1) * (1.0 - target) - 1e-9)


def joint_thresholds(tails: dict[str, ScoreTail], target: float) -> tuple[dict[str, float], float]:
    """({check: threshold}, the level in normalised units) flagging at most `target` of unseen real mouths by any
    check. A check with no applicable value gets +-inf (never fails)."""
    norm = {c: _normaliser(t.values, t.rule, SHARES[c]) for c, t in tails.items()}
    n = len(next(iter(tails.values())).values)
    joint = np.full(n, -np.inf)
    for c, t in tails.items():
        x = t.values if t.rule == "max" else -t.values
        z = (x - norm[c][0]) / norm[c][1]
        joint = np.fmax(joint, np.where(np.isnan(z), -np.inf, z))
    k = conformal_rank(n, target)
    level = float(np.sort(joint)[k - 1]) if 1 <= k <= n else math.inf
    out = {}
    for c, t in tails.items():
        med, span = norm[c]
        edge = med + level * span
        empty = bool(np.isnan(t.values).all())
        out[c] = (math.inf if empty else edge) if t.rule == "max" else (-math.inf if empty else -edge)
    return out, level
