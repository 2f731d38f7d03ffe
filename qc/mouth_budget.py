"""The mouth checks' thresholds from one shared budget, their margins set by cross-validation over identities.

Every mouth check c has, per real mouth, an out-of-sample score (NaN where the check does not apply: ghost teeth
on open mouths, the reference check without a reference). Check c's threshold at margin m is q_c + m (q_c - med_c):
q_c is its real scores' quantile leaving SHARES[c] of the target beyond it ("min" checks: below, mirrored), med_c
their median (for a positive ratio judged "min", the blur check's sharpness ratio, all in log units: extrapolated
linearly its threshold reached 0 on JAFFE_bakcup and the check flagged nothing). A tail quantile of a few
hundred mouths is set by one or two of them, so q_c alone flags more than its share of unseen mouths; the margin
extrapolates past it. The common margin is the smallest on MARGINS at which
the real mouths stay within the target out of sample: the identities are split in folds (whole identities), each
fold is judged with thresholds fitted on the other folds, and the count c of real mouths flagged by any check must
have (c + 1) / (n + 1) <= target (the split-conformal correction). A check that alone flags no held-out mouth at a
smaller margin keeps that one plus CAP_SLACK (further out changes no count, it only loses damage). The run's
thresholds are then fitted on all mouths at those margins: one threshold per check, so the decision stays
qc/decide.py DECIDING_CHECKS. This replaces a fixed margin (0.3, which left 1/2-3/4 of the budget unused) with
margins measured on the run's own mouths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# each check's share of the budget (the damage detector catches most kinds: it gets most of it)
SHARES = {"detector": 0.4, "realism": 0.15, "reference": 0.15, "ghost_teeth": 0.075, "ghost_lip_line": 0.075,
          "seam": 0.075, "blur": 0.075}
# a capped check's margin: this much past the one at which alone it flags no held-out mouth (that one is set by a
# single mouth; on JAFFE_bakcup, 10 identities, it flagged 1.4 % of real mouths left out one identity at a time)
CAP_SLACK = 0.5
_TINY = 1e-9  # the smallest ratio a log tail takes (a ratio of 0: no texture at all)
# the margins tried, smallest first (negative: thresholds inside the quantiles)
MARGINS = tuple(round(x, 2) for x in (*np.arange(-0.5, 1.0, 0.05), *np.arange(1.0, 3.01, 0.25)))


@dataclass(frozen=True)
class ScoreTail:
    """One check's real out-of-sample scores (NaN: not applicable), its rule ("max" or "min") and whether the
    score is a positive ratio whose tail is placed in log units (`log`: quantiles, median and margin of log(score),
    so the extrapolated threshold stays a positive ratio; extrapolated linearly, a "min" ratio's threshold reaches
    0 or below, where the check flags nothing, as soon as the margin is larger than the tail's distance to 0)."""

    values: np.ndarray
    rule: str = "max"
    log: bool = False


def _tails_at(tails: dict[str, ScoreTail], target: float, keep: np.ndarray | None) -> dict[str, tuple]:
    """Per check (rule, q, median, log) of the mouths in `keep`, in the mirrored direction, in log units where the
    tail is (None: none applies)."""
    out: dict[str, tuple] = {}
    for c, t in tails.items():
        v = t.values if keep is None else t.values[keep]
        v = v[~np.isnan(v)]
        if t.log:
            v = np.log(np.maximum(v, _TINY))
        x = v if t.rule == "max" else -v
        out[c] = (t.rule, float(np.quantile(x, 1.0 - min(SHARES[c] * target, 0.5))), float(np.median(x)), t.log) \
            if len(x) else (t.rule, None, None, t.log)
    return out


def _edges(quantiles: dict[str, tuple], margin: float | dict[str, float]) -> dict[str, float]:
    out = {}
    for c, (rule, q, med, log) in quantiles.items():
        mc = margin[c] if isinstance(margin, dict) else margin
        edge = math.inf if q is None else q + mc * max(q - med, 0.0)
        edge = edge if rule == "max" else -edge
        out[c] = float(math.exp(edge) if log and math.isfinite(edge) else edge)
    return out


def thresholds_at(tails: dict[str, ScoreTail], target: float, margin: float | dict[str, float],
                  keep: np.ndarray | None = None) -> dict[str, float]:
    """Each check's threshold at `margin` (one for all, or per check) from the mouths in `keep` (default all):
    +-inf where none applies."""
    return _edges(_tails_at(tails, target, keep), margin)


def flagged_by_any(tails: dict[str, ScoreTail], t: dict[str, float]) -> np.ndarray:
    """Which mouths fail at least one check under thresholds t (a NaN score never fails)."""
    n = len(next(iter(tails.values())).values)
    out = np.zeros(n, bool)
    for c, tail in tails.items():
        v = tail.values
        out |= np.nan_to_num(v, nan=-np.inf) > t[c] if tail.rule == "max" else np.nan_to_num(v, nan=np.inf) < t[c]
    return out


def _search(fits: Callable[[float], bool]) -> float:
    """The smallest margin on MARGINS that fits (the count falls as the margin grows: bisect); the largest when
    none does."""
    lo, hi = 0, len(MARGINS) - 1
    if fits(MARGINS[lo]):
        return MARGINS[lo]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(MARGINS[mid]) else (mid, hi)
    return MARGINS[hi]


def budget_margins(tails: dict[str, ScoreTail], folds: np.ndarray, target: float,
                   fixed: dict[str, float] | None = None) -> dict[str, float]:
    """Each check's margin: the smallest common margin on MARGINS whose cross-validated flag count c (each identity
    fold judged with thresholds fitted on the other folds) has (c + 1) / (n + 1) <= target, capped per check at the
    smallest margin at which that check alone flags no held-out real mouth (further out it only loses damage; the
    count is the same). Checks in `fixed` keep the margin given there (the others' common margin is searched with
    them at it)."""
    fixed = fixed or {}
    n = len(folds)
    per_fold = [(folds == f, _tails_at(tails, target, folds != f)) for f in np.unique(folds)]

    def count(margin: float | dict[str, float], only: str | None = None) -> int:
        sub = tails if only is None else {only: tails[only]}
        margin = {c: fixed.get(c, margin) for c in tails} if isinstance(margin, float) else margin
        return sum(int(flagged_by_any(sub, _edges({c: q[c] for c in sub}, margin))[mine].sum())
                   for mine, q in per_fold)

    def alone_flags_none(c: str) -> Callable[[float], bool]:
        return lambda m: count(m, c) == 0

    common = _search(lambda m: (count(m) + 1) / (n + 1) <= target)
    return {c: fixed[c] if c in fixed else min(common, _search(alone_flags_none(c)) + CAP_SLACK) for c in tails}


def budget_thresholds(tails: dict[str, ScoreTail], folds: np.ndarray, target: float,
                      fixed: dict[str, float] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """({check: threshold} fitted on all mouths, {check: margin}): the checks together flag at most `target` of
    real mouths out of sample (cross-validated over the identity folds); `fixed`: as budget_margins."""
    margins = budget_margins(tails, folds, target, fixed)
    return thresholds_at(tails, target, margins), margins


def cross_validated_recall(real: dict[str, ScoreTail], damaged: dict[str, ScoreTail], real_folds: np.ndarray,
                           damaged_folds: np.ndarray, target: float, fixed: dict[str, float] | None = None) -> float:
    """The share of damaged samples flagged by any check, each identity fold's samples judged with the budget
    thresholds fitted on the other folds' real mouths (budget_thresholds at `target`, `fixed` margins)."""
    hit = np.zeros(len(damaged_folds), bool)
    for f in np.unique(damaged_folds):
        keep = real_folds != f
        if not keep.any():
            continue
        sub = {c: ScoreTail(t.values[keep], t.rule) for c, t in real.items()}
        t, _ = budget_thresholds(sub, real_folds[keep], target, fixed)
        mine = damaged_folds == f
        hit[mine] = flagged_by_any({c: ScoreTail(d.values[mine], d.rule) for c, d in damaged.items()}, t)
    return float(hit.mean()) if len(hit) else 0.0


def cross_validated_count(tails: dict[str, ScoreTail], folds: np.ndarray, target: float,
                          margins: dict[str, float]) -> int:
    """Real mouths flagged by any check at `margins`, each identity fold judged with thresholds fitted on the
    other folds."""
    return sum(int(flagged_by_any(tails, thresholds_at(tails, target, margins, folds != f))[folds == f].sum())
               for f in np.unique(folds))


def _without(tails: dict[str, ScoreTail], check: str) -> dict[str, ScoreTail]:
    return {c: t for c, t in tails.items() if c != check}


def _caught(hit: np.ndarray, kinds: np.ndarray | None) -> float:
    """The share of damaged samples hit, each kind weighing the same (kinds None: each sample)."""
    if not len(hit):
        return 0.0
    if kinds is None:
        return float(hit.mean())
    return float(np.mean([hit[kinds == k].mean() for k in np.unique(kinds)]))


def check_share(real: dict[str, ScoreTail], damaged: dict[str, ScoreTail], real_folds: np.ndarray,
                damaged_folds: np.ndarray, target: float, check: str, kinds: np.ndarray | None = None) -> dict:
    """How much of the budget `check` gets on this run: off, or its own margin on MARGINS (the other checks share
    the rest through their common margin), whichever catches the most of the run's own synthetic damage at the
    same out-of-sample budget (a margin at which the budget cannot be met is no choice; ties: off, then the larger
    margin; `kinds`: each damaged sample's kind, so every kind weighs the same in "most", not the commonest). A
    check whose real scores are heavy-tailed at a common margin moves every other threshold out; its own margin
    lets it take less of the budget, or none.
    Returns {on, margin (None: off), recall / recall_common / recall_off: the damage caught at that choice / with
    one common margin for all checks / without the check, each cross-validated over identity folds}."""
    best: tuple[float, float | None] = (-1.0, None)
    for md in (None, *MARGINS[::-1]):
        fixed = None if md is None else {check: md}
        r, d = (_without(real, check), _without(damaged, check)) if md is None else (real, damaged)
        t, margins = budget_thresholds(r, real_folds, target, fixed)
        if (cross_validated_count(r, real_folds, target, margins) + 1) / (len(real_folds) + 1) > target:
            continue  # the check at this margin alone spends more than the budget: not a choice
        caught = _caught(flagged_by_any(d, t), kinds) if len(damaged_folds) else 0.0
        if caught > best[0]:
            best = (caught, md)
    md = best[1]
    off = cross_validated_recall(_without(real, check), _without(damaged, check), real_folds, damaged_folds, target)
    cv = dict(recall=off if md is None else
              cross_validated_recall(real, damaged, real_folds, damaged_folds, target, {check: md}),
              recall_common=cross_validated_recall(real, damaged, real_folds, damaged_folds, target), recall_off=off)
    return dict(on=md is not None, margin=None if md is None else float(md), damaged=int(len(damaged_folds)),
                **{k: round(float(v), 4) for k, v in cv.items()})
