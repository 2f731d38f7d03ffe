"""qc/mouth_budget.py: the margin chosen by cross-validation over identity folds keeps fresh real mouths flagged by
any check within the target, and spends it (the fixed margin 0.3 it replaces used a quarter to a half of it);
synthetic scores, fast."""

from __future__ import annotations

import math

import numpy as np

from qc.mouth_budget import (
    MARGINS,
    ScoreTail,
    budget_margins,
    budget_thresholds,
    check_share,
    cross_validated_count,
    cross_validated_recall,
    flagged_by_any,
    thresholds_at,
)

TARGET = 0.02


def _draw(rng: np.random.Generator, n: int) -> dict[str, ScoreTail]:
    """Three checks' real scores: a heavy-tailed "max" one, a "min" one, one that applies to half the mouths."""
    closed = rng.random(n) < 0.5
    return {"detector": ScoreTail(rng.standard_t(4, n)), "blur": ScoreTail(rng.normal(1.0, 0.2, n), "min"),
            "ghost_teeth": ScoreTail(np.where(closed, rng.exponential(1.0, n), np.nan))}


def _folds(n: int) -> np.ndarray:
    return np.repeat(np.arange(n // 2), 2) % 10  # identities of two photos, ten folds


def test_fresh_real_mouths_are_flagged_within_the_target_and_the_budget_is_spent():
    rng = np.random.default_rng(0)
    rates, old = [], []
    for _ in range(60):
        t, margins = budget_thresholds(_draw(rng, 200), _folds(200), TARGET)
        assert set(margins.values()) <= set(MARGINS)
        fresh = _draw(rng, 4000)
        rates.append(flagged_by_any(fresh, t).mean())
        cal = _draw(rng, 200)
        old.append(flagged_by_any(fresh, thresholds_at(cal, TARGET, 0.3)).mean())  # the old fixed margin
    assert np.mean(rates) <= TARGET, np.mean(rates)
    assert np.mean(rates) >= 0.6 * TARGET, np.mean(rates)  # spent
    assert np.mean(old) < 0.8 * np.mean(rates), (np.mean(old), np.mean(rates))  # the fixed margin left it unused


def test_thresholds_move_out_with_the_margin_and_a_check_without_mouths_never_fails():
    rng = np.random.default_rng(1)
    tails = _draw(rng, 200)
    tails["reference"] = ScoreTail(np.full(200, np.nan))
    a, b = thresholds_at(tails, TARGET, 0.0), thresholds_at(tails, TARGET, 0.5)
    assert b["detector"] > a["detector"] and b["blur"] < a["blur"] and b["ghost_teeth"] > a["ghost_teeth"]
    assert a["reference"] == math.inf
    assert not flagged_by_any(tails, b)[np.isnan(tails["ghost_teeth"].values) & (tails["detector"].values < 0)
                                         & (tails["blur"].values > 0.8)].any()


def test_the_margin_is_the_smallest_that_keeps_the_cross_validated_count_within_the_target():
    rng = np.random.default_rng(2)
    tails, folds = _draw(rng, 300), _folds(300)
    margins = budget_margins(tails, folds, TARGET)
    m = max(margins.values())  # the common margin (a check is capped where alone it flags no held-out mouth)

    def count(margin: float | dict[str, float]) -> int:
        return sum(int(flagged_by_any(tails, thresholds_at(tails, TARGET, margin, folds != f))[folds == f].sum())
                   for f in np.unique(folds))

    assert (count(m) + 1) / 301 <= TARGET and (count(margins) + 1) / 301 <= TARGET
    if m != MARGINS[0]:
        assert (count(MARGINS[MARGINS.index(m) - 1]) + 1) / 301 > TARGET
    for c, mc in margins.items():  # capped: alone, it flags no held-out mouth there
        if mc < m:
            assert sum(int(flagged_by_any({c: tails[c]}, thresholds_at({c: tails[c]}, TARGET, mc, folds != f))[
                folds == f].sum()) for f in np.unique(folds)) == 0


def _run(rng: np.random.Generator, n: int, useful: bool) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """A run's real mouths and its synthetic damaged R (qc/mouth_calibration.py's detector gate inputs): blur
    catches part of the damage; a `useful` detector separates damaged from real R, a useless one has heavy-tailed
    real scores and damaged scores drawn as the real ones (it learnt nothing that holds on unseen identities)."""
    folds = _folds(n)
    detector = rng.normal(0.0, 1.0, n) if useful else rng.standard_t(2, n)
    real = {"blur": ScoreTail(rng.normal(1.0, 0.1, n), "min"), "detector": ScoreTail(detector)}
    damaged = {"blur": ScoreTail(rng.uniform(0.55, 0.85, n), "min"),
               "detector": ScoreTail(rng.normal(6.0, 1.0, n) if useful else rng.standard_t(2, n))}
    return real, damaged, folds, folds


def test_a_detector_that_catches_nothing_is_dropped_and_the_other_checks_keep_their_thresholds():
    rng = np.random.default_rng(3)
    real, damaged, rf, df = _run(rng, 200, useful=False)
    gate = check_share(real, damaged, rf, df, TARGET, "detector")
    assert not gate["on"] and gate["margin"] is None and gate["recall_off"] > gate["recall_common"], gate
    # with it, its heavy tail moves the shared margin out and blur catches less of the damage
    assert cross_validated_recall({"blur": real["blur"]}, {"blur": damaged["blur"]}, rf, df, TARGET) \
        > cross_validated_recall(real, {"blur": damaged["blur"], "detector": ScoreTail(np.full(200, -np.inf))},
                                 rf, df, TARGET)
    without, _ = budget_thresholds({"blur": real["blur"]}, rf, TARGET)
    with_, _ = budget_thresholds(real, rf, TARGET)
    assert without["blur"] >= with_["blur"]  # blur's threshold is not dragged out once the detector is dropped


def test_a_detector_that_catches_the_damage_earns_its_share():
    rng = np.random.default_rng(4)
    real, damaged, rf, df = _run(rng, 200, useful=True)
    gate = check_share(real, damaged, rf, df, TARGET, "detector")
    assert gate["on"] and gate["margin"] in MARGINS and gate["recall"] > gate["recall_off"] + 0.2, gate
    assert gate["damaged"] == 200
    # the budget still holds out of sample at the detector's chosen margin (a margin that spends it all alone is
    # no choice)
    margins = budget_margins(real, rf, TARGET, {"detector": gate["margin"]})
    assert (cross_validated_count(real, rf, TARGET, margins) + 1) / 201 <= TARGET


def test_a_log_tail_keeps_a_min_ratio_threshold_positive_where_the_linear_one_reaches_zero():
    """A positive ratio judged "min" (the blur check's sharpness ratio): its tail placed in log units stays a
    positive threshold at any margin, between the real ratios and ratios several times smaller; extrapolated
    linearly past the median-to-tail distance it reaches 0 or below, where it flags nothing."""
    rng = np.random.default_rng(4)
    real = np.exp(rng.normal(np.log(0.27), 0.25, 200))  # ratios around 0.27, the smallest near 0.14
    damaged = real / rng.uniform(3.0, 8.0, 200)  # the same mouths blurred: several times less texture
    for margin in (0.5, 1.0, 2.0):
        lin = thresholds_at({"blur": ScoreTail(real, "min")}, TARGET, margin)["blur"]
        log = thresholds_at({"blur": ScoreTail(real, "min", log=True)}, TARGET, margin)["blur"]
        assert 0.0 < log < real.min()
        assert (damaged < log).mean() > (0.5 if margin <= 1.0 else 0.05), ((damaged < log).mean(), log)
        assert (damaged < log).mean() >= (damaged < lin).mean()
        if margin >= 1.0:
            assert lin <= 0.0 and not (damaged < lin).any(), lin
    t, _ = budget_thresholds({"blur": ScoreTail(real, "min", log=True)}, _folds(200), TARGET)
    assert 0.0 < t["blur"] < np.quantile(real, 0.05)
