"""qc/decide.py: thresholds from config, their JSON record, and every check of failed_checks."""

from __future__ import annotations

import json

import pytest

from qc.config import QCConfig
from qc.decide import (
    REASON_BLURRY,
    REASON_EXPRESSION_LOST,
    REASON_IDENTITY_LEAK,
    REASON_NO_FACE,
    REASON_SWAP_FAILED,
    Scores,
    Thresholds,
    failed_checks,
)

T = Thresholds(max_leak_similarity=0.9, min_swap_similarity=0.95, max_expression_distance=0.1, min_sharpness=20.0,
               identity_backend="dlib")
GOOD = Scores(face_found=True, id_sim_rt=0.5, id_sim_rj=0.99, expr_dist_rt=0.05, sharpness=100.0)


def test_thresholds_from_config_reads_every_section() -> None:
    qc = QCConfig.model_validate({"identity": {"backend": "arcface", "model": "m", "max_leak_similarity": 0.3,
                                               "min_swap_similarity": 0.6},
                                  "expression": {"max_distance": 0.2}, "quality": {"min_sharpness": 7.5}})
    assert Thresholds.from_config(qc) == Thresholds(0.3, 0.6, 0.2, 7.5, "arcface")
    assert Thresholds.from_config(QCConfig()) == Thresholds(0.92, 0.95, 0.12, 20.0, "dlib")


def test_thresholds_to_json_is_sorted_and_complete() -> None:
    text = T.to_json()
    assert json.loads(text) == {"max_leak_similarity": 0.9, "min_swap_similarity": 0.95,
                                "max_expression_distance": 0.1, "min_sharpness": 20.0, "identity_backend": "dlib"}
    assert list(json.loads(text)) == sorted(json.loads(text))  # stable record, same text for same thresholds
    assert text == Thresholds(**json.loads(text)).to_json()


def test_no_face_is_the_only_reason_whatever_the_other_scores() -> None:
    assert failed_checks(Scores(face_found=False, sharpness=1.0, id_sim_rt=1.0), T) == [REASON_NO_FACE]


def test_good_scores_pass_and_bounds_are_inclusive() -> None:
    assert failed_checks(GOOD, T) == []
    at_bounds = Scores(face_found=True, id_sim_rt=0.9, id_sim_rj=0.95, expr_dist_rt=0.1, sharpness=20.0)
    assert failed_checks(at_bounds, T) == []


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("sharpness", 19.9, REASON_BLURRY),
    ("id_sim_rt", 0.91, REASON_IDENTITY_LEAK),
    ("id_sim_rj", 0.94, REASON_SWAP_FAILED),
    ("expr_dist_rt", 0.11, REASON_EXPRESSION_LOST),
])
def test_each_check_fails_alone(field: str, value: float, reason: str) -> None:
    scores = Scores(**{**GOOD.__dict__, field: value})
    assert failed_checks(scores, T) == [reason]


def test_every_failed_check_is_listed_in_fixed_order() -> None:
    bad = Scores(face_found=True, id_sim_rt=0.99, id_sim_rj=0.1, expr_dist_rt=0.9, sharpness=0.0)
    assert failed_checks(bad, T) == [REASON_BLURRY, REASON_IDENTITY_LEAK, REASON_SWAP_FAILED,
                                     REASON_EXPRESSION_LOST]


def test_missing_scores_are_not_judged() -> None:
    assert failed_checks(Scores(face_found=True), T) == []
    assert failed_checks(Scores(face_found=True, id_sim_rt=0.99), T) == [REASON_IDENTITY_LEAK]
