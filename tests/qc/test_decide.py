"""qc/decide.py: one reason code per failed check, each check alone."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pipeline.config import load_config
from qc import decide as d
from qc.decide import Scores, Thresholds, failed_checks

# the fixed expression checks are off by default since the calibrated class check (issue 19); turned on here to test
# each of them alone (the class check has its own tests in test_expression_calibration.py)
T = Thresholds.from_config(load_config(overrides=["qc.expression.max_distance=0.12",
                                                  "qc.expression.max_prob_distance=0.5",
                                                  "qc.expression.min_contrast=0"]).qc)
T_ABS = replace(T, max_leak_similarity=0.92, min_swap_similarity=0.95)

# Scores of a good R: every check passes.
GOOD = Scores(face_found=True, id_sim_rt=0.80, id_sim_rj=0.98, expr_dist_rt=0.05, sharpness=150.0,
              id_margin_ji=0.18, id_margin_j=0.10, expr_prob_dist_rt=0.1, expr_prob_dist_ct=0.9,
              expr_prob_dist_rc=0.8, expr_gain=0.89, expr_contrast_st=3.0, r_mouth_aspect=0.01,
              t_mouth_aspect=0.02, r_teeth=0.0, t_teeth=0.0, r_lip_line=-0.3, mouth_seam=4.0, mouth_sharpness_ratio=0.3)


def test_good_scores_pass_with_calibrated_and_absolute_thresholds():
    assert failed_checks(GOOD, T) == []
    assert failed_checks(GOOD, T_ABS) == []


@pytest.mark.parametrize("change, reason", [
    (dict(id_margin_ji=0.01), d.REASON_IDENTITY_LEAK),  # i within the margin of j
    (dict(id_margin_ji=-0.2, id_margin_j=-0.2), d.REASON_IDENTITY_LEAK),  # R identified as i
    (dict(id_margin_j=0.0), d.REASON_IDENTITY_AMBIGUOUS),  # a third identity as close as j
    (dict(expr_dist_rt=0.2), d.REASON_EXPRESSION_LOST),
    (dict(expr_prob_dist_rt=0.7, expr_gain=0.22, expr_prob_dist_rc=0.5), d.REASON_EXPRESSION_MISMATCH),
    (dict(expr_prob_dist_rt=0.45, expr_prob_dist_rc=0.05, expr_gain=0.5), d.REASON_LAZY_EDIT),
    (dict(expr_prob_dist_rt=0.45, expr_prob_dist_rc=0.5, expr_gain=0.2), d.REASON_EXPRESSION_NOT_GAINED),
    (dict(expr_contrast_st=-0.4), d.REASON_EXPRESSION_NEARER_S),  # R on S's side of the S/T midpoint
    (dict(r_teeth=0.2), d.REASON_GHOST_TEETH),  # teeth over closed lips (both codes: T shows none)
    (dict(r_lip_line=0.1), d.REASON_GHOST_TEETH),  # the lip line lighter and greyer than the lips
    (dict(r_mouth_aspect=0.2, r_teeth=0.2), d.REASON_MOUTH_STATE),  # open with teeth, T closed
    (dict(mouth_seam=30.0), d.REASON_MOUTH_SEAM),
    (dict(mouth_sharpness_ratio=0.02), d.REASON_MOUTH_BLUR),
    (dict(sharpness=5.0), d.REASON_BLURRY),
])
def test_each_check_fails_alone_with_its_own_code(change, reason):
    reasons = failed_checks(replace(GOOD, **change), T)
    assert reasons and reasons[0] == reason, reasons
    if reason not in (d.REASON_GHOST_TEETH, d.REASON_EXPRESSION_MISMATCH):
        assert reasons == [reason]


def test_ghost_teeth_also_disagrees_with_a_closed_toothless_t():
    assert failed_checks(replace(GOOD, r_teeth=0.2), T) == [d.REASON_GHOST_TEETH, d.REASON_MOUTH_STATE]


def test_absolute_thresholds_apply_when_set_and_not_when_null():
    leaky = replace(GOOD, id_sim_rt=0.95)
    assert failed_checks(leaky, T_ABS) == [d.REASON_IDENTITY_LEAK]
    assert failed_checks(leaky, replace(T_ABS, max_leak_similarity=None)) == []
    weak = replace(GOOD, id_sim_rj=0.9)
    assert failed_checks(weak, T_ABS) == [d.REASON_SWAP_FAILED]
    assert failed_checks(weak, replace(T_ABS, min_swap_similarity=None)) == []


def test_no_gain_is_required_when_the_carrier_already_has_ts_expression():
    lazy_but_fine = replace(GOOD, expr_prob_dist_ct=0.1, expr_prob_dist_rc=0.02, expr_gain=0.0)
    assert failed_checks(lazy_but_fine, T) == []


def test_mouth_states_in_the_band_agree_with_both():
    half_open = replace(GOOD, r_mouth_aspect=0.08, r_teeth=0.06, t_mouth_aspect=0.15, t_teeth=0.2)
    assert failed_checks(half_open, T) == []
    closed_vs_open = replace(GOOD, t_mouth_aspect=0.15, t_teeth=0.2)
    assert failed_checks(closed_vs_open, T) == [d.REASON_MOUTH_STATE]


def test_no_face_is_the_only_reason():
    assert failed_checks(Scores(face_found=False, sharpness=1.0), T) == [d.REASON_NO_FACE]


def test_thresholds_round_trip_through_json():
    assert Thresholds.from_json(T_ABS.to_json()) == T_ABS
    old = json.dumps({"max_leak_similarity": 0.92, "min_swap_similarity": 0.95, "max_expression_distance": 0.12,
                      "min_sharpness": 20.0, "identity_backend": "dlib"})
    assert Thresholds.from_json(old).max_leak_similarity == 0.92  # rows written before issue 10


def test_mouth_realism_rejects_above_its_threshold_and_is_off_without_one():
    unreal = replace(GOOD, mouth_realism=3.0)
    assert failed_checks(unreal, replace(T, max_mouth_realism=2.5)) == [d.REASON_MOUTH_UNREAL]
    assert failed_checks(unreal, replace(T, max_mouth_realism=3.5)) == []
    assert T.max_mouth_realism is None and failed_checks(unreal, T) == []  # shipped config: calibrated per run
    check = next(c for c in d.DECIDING_CHECKS if c.reason == d.REASON_MOUTH_UNREAL)
    assert d.check_passes(check, 3.0, d.applied_threshold(check, {"max_mouth_realism": 2.5})) is False


def test_mouth_tint_rejects_above_its_threshold_and_is_off_without_one():
    tinted = replace(GOOD, mouth_tint=25.0)
    assert failed_checks(tinted, replace(T, max_mouth_tint=4.0)) == [d.REASON_MOUTH_TINT]
    assert T.max_mouth_tint is None and failed_checks(tinted, T) == []  # shipped config: calibrated per run
    check = next(c for c in d.DECIDING_CHECKS if c.reason == d.REASON_MOUTH_TINT)
    assert d.check_passes(check, 25.0, d.applied_threshold(check, {"max_mouth_tint": 4.0})) is False
