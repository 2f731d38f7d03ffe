"""qc/mouth_budget.py: the joint split-conformal level flags at most the target share of fresh real mouths by any
check, and spends it (the old per-check shares with a tail margin used a quarter of it); synthetic scores, fast."""

from __future__ import annotations

import math

import numpy as np

from qc.mouth_budget import ScoreTail, conformal_rank, joint_thresholds

TARGET = 0.02


def _draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Three checks' real scores: a heavy-tailed "max" one, a "min" one, and one that applies to half the mouths."""
    closed = rng.random(n) < 0.5
    return {"detector": rng.standard_t(4, n), "blur": rng.normal(1.0, 0.2, n),
            "ghost_teeth": np.where(closed, rng.exponential(1.0, n), np.nan)}


def _flagged(values: dict[str, np.ndarray], t: dict[str, float]) -> np.ndarray:
    return ((values["detector"] > t["detector"]) | (values["blur"] < t["blur"])
            | (np.nan_to_num(values["ghost_teeth"], nan=-np.inf) > t["ghost_teeth"]))


def test_fresh_real_mouths_are_flagged_at_most_the_target_share_and_the_budget_is_spent():
    rng = np.random.default_rng(0)
    rates, in_sample = [], []
    for _ in range(300):
        cal = _draw(rng, 200)
        t, level = joint_thresholds({"detector": ScoreTail(cal["detector"]), "blur": ScoreTail(cal["blur"], "min"),
                                     "ghost_teeth": ScoreTail(cal["ghost_teeth"])}, TARGET)
        assert math.isfinite(level)
        rates.append(_flagged(_draw(rng, 2000), t).mean())
        in_sample.append(_flagged(cal, t).sum())
    # split-conformal: P(a fresh mouth flagged) <= target; with 200 mouths it is (200 - k + ... ) / 201 ~ 1.5-2 %
    assert np.mean(rates) <= TARGET + 0.001, np.mean(rates)
    assert np.mean(rates) >= 0.6 * TARGET, np.mean(rates)
    assert max(in_sample) <= 200 - conformal_rank(200, TARGET)


def test_each_check_fails_exactly_where_its_normalised_score_passes_the_level():
    rng = np.random.default_rng(1)
    cal = _draw(rng, 150)
    tails = {"detector": ScoreTail(cal["detector"]), "blur": ScoreTail(cal["blur"], "min"),
             "ghost_teeth": ScoreTail(cal["ghost_teeth"])}
    t, _ = joint_thresholds(tails, TARGET)
    k = conformal_rank(150, TARGET)
    assert k == 148 and _flagged(cal, t).sum() == 150 - k  # no ties: exactly the mouths above the k-th
    assert t["blur"] < np.median(cal["blur"]) and t["detector"] > np.median(cal["detector"])


def test_a_check_with_no_applicable_mouth_never_fails_and_too_few_mouths_flag_nothing():
    t, _ = joint_thresholds({"detector": ScoreTail(np.arange(100.0)), "blur": ScoreTail(np.full(100, np.nan), "min"),
                             "ghost_teeth": ScoreTail(np.full(100, np.nan))}, TARGET)
    assert t["blur"] == -math.inf and t["ghost_teeth"] == math.inf and 90 < t["detector"] < 99
    t, level = joint_thresholds({"detector": ScoreTail(np.arange(20.0))}, TARGET)
    assert level == math.inf and t["detector"] == math.inf  # k = ceil(21 x 0.98) = 21 > 20: no level certifies 2 %
