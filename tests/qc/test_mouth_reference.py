"""qc/mouth_reference.py: pairing, resampling, the null and the decision, on the demo corpus's real faces (fast)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.config import load_config
from qc.decide import REASON_MOUTH_REFERENCE, Scores, Thresholds, failed_checks
from qc.mouth_calibration import apply_overrides, calibrate_real_mouths, measure_real_mouths
from qc.mouth_reference import (
    FEATURES,
    ReferenceNull,
    reference_features,
    reference_pairs,
    resample_like_generation,
)

QC = load_config().qc


def test_pairs_are_another_photo_of_the_same_identity_and_deterministic():
    ids = np.array(["a", "a", "b", "c", "c", "c"])
    keys = [f"k{i}" for i in range(6)]
    pairs = reference_pairs(ids, keys)
    assert pairs == reference_pairs(ids, keys)
    assert [a for a, _ in pairs] == [0, 1, 3, 4, 5]  # "b" has no other photo: no pair
    assert all(ids[a] == ids[b] and a != b for a, b in pairs)


def test_resampling_is_deterministic_per_key_and_only_resamples():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    a, b = resample_like_generation(img, "x"), resample_like_generation(img, "x")
    assert np.array_equal(a, b) and a.shape == img.shape
    assert not np.array_equal(a, img)
    # a sub-pixel bilinear shift: the mean barely moves, the fine texture is attenuated
    assert abs(float(a.mean()) - float(img.mean())) < 2.0
    assert float(np.diff(a.astype(float), axis=1).std()) < float(np.diff(img.astype(float), axis=1).std())


def test_null_scores_in_units_of_its_spread():
    d = np.random.default_rng(2).normal(0.0, 1.0, (500, len(FEATURES)))
    null = ReferenceNull.fit(d)
    assert np.allclose(null.median, 0.0, atol=0.2)
    assert np.all(null.spread > 1.2) and np.all(null.spread < 2.2)  # the 0.9 quantile of |N(0,1)| is 1.64
    r = np.zeros(len(FEATURES))
    r[2] = 5 * null.spread[2] + null.median[2]
    assert null.score(r, np.zeros(len(FEATURES))) == pytest.approx(5.0)
    assert set(null.record()) == {"features", "median", "spread"}


def test_the_decision_uses_the_reference_threshold_only_when_both_are_there():
    t = replace(Thresholds.from_config(QC), max_mouth_reference_diff=3.0)
    assert REASON_MOUTH_REFERENCE in failed_checks(Scores(face_found=True, mouth_reference_diff=3.5), t)
    assert REASON_MOUTH_REFERENCE not in failed_checks(Scores(face_found=True, mouth_reference_diff=2.5), t)
    assert REASON_MOUTH_REFERENCE not in failed_checks(Scores(face_found=True), t)
    off = replace(t, max_mouth_reference_diff=None)
    assert REASON_MOUTH_REFERENCE not in failed_checks(Scores(face_found=True, mouth_reference_diff=99.0), off)


def test_config_overrides_or_turns_off_the_calibrated_threshold():
    base = Thresholds.from_config(QC)
    fitted = {"max_mouth_reference_diff": 4.0}
    assert apply_overrides(base, fitted, QC).max_mouth_reference_diff == 4.0
    given = QC.model_copy(update={"mouth": QC.mouth.model_copy(update={"max_reference_diff": 7.0})})
    assert apply_overrides(base, fitted, given).max_mouth_reference_diff == 7.0
    off = QC.model_copy(update={"mouth": QC.mouth.model_copy(update={"check_reference": False})})
    assert apply_overrides(base, fitted, off).max_mouth_reference_diff is None


def test_too_few_pairs_leave_the_check_off(london_faces):
    """A corpus with one photo per identity has no legit pair: the other checks calibrate, this one stays off."""
    faces = [(f.identity, f.image, f.landmarks68) for by in london_faces.values() for f in by.values()]
    one_each = [f for k, f in enumerate(faces) if k % 2 == 0][:110]
    m = measure_real_mouths(one_each)
    assert len(m.pairs) == 0
    cal = calibrate_real_mouths(m, Thresholds.from_config(QC), QC)
    assert cal.thresholds.mouth_thresholds_source == "calibrated"
    assert cal.thresholds.max_mouth_reference_diff is None and cal.reference is None


def test_features_see_a_dark_outline_that_the_reference_lacks(london_faces):
    from qc.artifact_cases import outline
    f = london_faces[sorted(london_faces)[0]]["neutral"]
    clean = reference_features(f.image, f.landmarks68)
    drawn = reference_features(outline(f.image, f.landmarks68, np.random.default_rng(0)), f.landmarks68)
    k = FEATURES.index("outline_outer")
    assert drawn[k] > clean[k] + 0.05
