"""The per-run, per-class expression calibration (qc/expression_calibration.py) and the decision it feeds."""

from __future__ import annotations

import numpy as np
import pytest

from qc.config import QCConfig
from qc.decide import (
    DECIDING_CHECKS,
    REASON_EXPRESSION_NOT_RECOGNISED,
    REASON_EXPRESSION_UNJUDGEABLE,
    Scores,
    Thresholds,
    applied_threshold,
    failed_checks,
)
from qc.expression_calibration import (
    conformal_threshold,
    fit_with_evidence,
    identity_relative,
    photo_features,
)

FIT = dict(max_false_pass=0.05, min_class_recall=0.5, min_class_photos=10, min_class_identities=3)


@pytest.mark.parametrize("n,alpha", [(19, 0.05), (100, 0.05), (250, 0.1), (1000, 0.01)])
def test_conformal_threshold_keeps_the_false_pass_rate(n, alpha):
    """Uniform negatives: a new one passes with probability 1 - threshold, which the guarantee bounds by alpha
    on average over calibration draws (and not by much less: the threshold is not needlessly strict)."""
    rng = np.random.default_rng(n)
    passes = []
    for _ in range(400):
        calib = rng.uniform(size=n)
        thr = conformal_threshold(calib, alpha)
        assert np.mean(calib >= thr) <= alpha
        passes.append(1 - thr)
    assert alpha - 2 / n - 0.01 <= np.mean(passes) <= alpha


def test_conformal_threshold_is_infinite_without_enough_negatives():
    assert conformal_threshold(np.arange(18.0), 0.05) == float("inf")
    assert conformal_threshold(np.arange(19.0), 0.05) == pytest.approx(18.0)


def test_identity_relative_features_cancel_the_persons_average():
    ident = np.array(["a", "a", "a", "b", "b"], dtype=object)
    labels = np.array(["x", "x", "y", "x", "y"], dtype=object)
    x = np.array([[1.0], [3.0], [10.0], [5.0], [7.0]])
    z = identity_relative(ident, labels, x)
    # a's class-balanced mean: mean(mean(1, 3), 10) = 6; b's: 6
    assert z.ravel().tolist() == [-5.0, -3.0, 4.0, -1.0, 1.0]


def test_london_classes_are_judged_out_of_sample(london_features):
    ident, labels, probs, desc = london_features
    cal, scores = fit_with_evidence(ident, labels, probs, desc, **FIT)
    assert [c.label for c in cal.classes] == ["neutral", "smiling"]
    for k, c in enumerate(cal.classes):
        assert c.judged, c.why_not
        right, wrong = scores[labels == c.label, k], scores[labels != c.label, k]
        assert np.mean(wrong >= c.threshold) <= 0.05
        assert np.mean(right >= c.threshold) >= 0.5
    # the fitted model scores a real photo like the out-of-sample model did (same side of the threshold mostly)
    z = identity_relative(ident, labels, photo_features(probs, desc))
    full = cal.model.log_odds(z)
    agree = np.mean((full[:, 0] >= cal.classes[0].threshold) == (scores[:, 0] >= cal.classes[0].threshold))
    assert agree >= 0.9


def test_a_class_with_too_few_photos_is_unjudgeable_and_fails_closed(london_features):
    ident, labels, probs, desc = london_features
    labels = labels.copy()
    labels[:6] = "surprised"  # six photos of a third class
    cal = fit_with_evidence(ident, labels, probs, desc, **FIT)[0]
    surprised = next(c for c in cal.classes if c.label == "surprised")
    assert not surprised.judged and "fewer than 10 photos" in surprised.why_not
    assert cal.unjudgeable() == ["surprised"]
    thresholds = Thresholds(None, None, None, 20.0, "dlib", expression_class_thresholds=cal.thresholds())
    unjudged = Scores(face_found=True, expr_class="surprised", expr_class_score=1e9)
    assert failed_checks(unjudged, thresholds) == [REASON_EXPRESSION_UNJUDGEABLE]
    # opting in judges it with its threshold (when one exists)
    assert cal.thresholds(judge_unjudgeable=True)["surprised"] == surprised.threshold


def test_the_class_check_compares_r_with_its_classes_threshold():
    thresholds = Thresholds(None, None, None, 20.0, "dlib", expression_class_thresholds={"happy": 1.0, "sad": None})
    assert failed_checks(Scores(face_found=True, expr_class="happy", expr_class_score=1.0), thresholds) == []
    assert failed_checks(Scores(face_found=True, expr_class="happy", expr_class_score=0.99), thresholds) == [
        REASON_EXPRESSION_NOT_RECOGNISED]
    assert failed_checks(Scores(face_found=True, expr_class="angry", expr_class_score=5.0), thresholds) == [
        REASON_EXPRESSION_UNJUDGEABLE]
    check = next(c for c in DECIDING_CHECKS if c.score == "expr_class_score")
    as_dict = {"expression_class_thresholds": {"happy": 1.0, "sad": None}}
    assert applied_threshold(check, as_dict, {"expr_class": "happy"}) == 1.0
    assert applied_threshold(check, as_dict, {"expr_class": "sad"}) is None


def test_the_shipped_config_calibrates_and_leaves_the_fixed_expression_checks_off():
    e = QCConfig().expression
    assert e.calibrate and e.max_false_pass == 0.05 and e.min_class_recall == 0.5
    assert e.max_distance is None and e.max_prob_distance is None and e.min_contrast is None
