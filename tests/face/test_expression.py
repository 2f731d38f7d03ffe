"""Expression descriptor: similarity invariance and neutral/smiling separation on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from stages.face.expression import (
    DESCRIPTOR_NAMES,
    WEIGHTS,
    expression_descriptor,
    expression_distance,
    normalise_landmarks,
)


def test_descriptor_shape_and_weights(demo_face):
    _, _, a = demo_face("001", "neutral")
    d = expression_descriptor(a.landmarks68)
    assert d.dtype == np.float32 and d.shape == (len(DESCRIPTOR_NAMES),) and np.isfinite(d).all()
    assert WEIGHTS.shape == d.shape and abs(WEIGHTS.sum() - 1) < 1e-9 and (WEIGHTS > 0).all()


def test_descriptor_ignores_position_scale_and_rotation(demo_face):
    _, face, aligned = demo_face("002", "smiling")
    lm = face.landmarks68.astype(np.float64)
    t = np.deg2rad(17)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    moved = (lm @ rot.T) * 2.7 + [40, -13]
    ref = expression_descriptor(lm)
    np.testing.assert_allclose(expression_descriptor(moved), ref, atol=1e-4)
    np.testing.assert_allclose(expression_descriptor(aligned.landmarks68), ref, atol=1e-3)
    n = normalise_landmarks(moved)
    np.testing.assert_allclose(n[36:42].mean(axis=0), [-0.5, 0], atol=1e-9)
    np.testing.assert_allclose(n[42:48].mean(axis=0), [0.5, 0], atol=1e-9)
    assert n[8, 1] > 0  # chin below the eyes


def test_neutral_and_smiling_separate(demo_face, demo_ids):
    desc = {(i, e): expression_descriptor(demo_face(i, e)[2].landmarks68)
            for i in demo_ids for e in ("neutral", "smiling")}
    mw = DESCRIPTOR_NAMES.index("mouth_width")
    wider = sum(desc[i, "smiling"][mw] > desc[i, "neutral"][mw] for i in demo_ids)
    assert wider >= len(demo_ids) - 1
    # Leave-one-identity-out nearest centroid: the descriptor tells neutral from smiling on unseen people.
    correct = 0
    for i in demo_ids:
        cent = {e: np.mean([desc[j, e] for j in demo_ids if j != i], axis=0) for e in ("neutral", "smiling")}
        for e in ("neutral", "smiling"):
            pred = min(cent, key=lambda c: expression_distance(desc[i, e], cent[c]))
            correct += pred == e
    assert correct / (2 * len(demo_ids)) >= 0.75
    # Averaged over people, one person's two expressions are further apart than two people's same expression.
    d_expr = np.median([expression_distance(desc[i, "neutral"], desc[i, "smiling"]) for i in demo_ids])
    d_id = np.median([expression_distance(desc[i, "neutral"], desc[j, "neutral"])
                      for i in demo_ids for j in demo_ids if i < j])
    assert d_expr > d_id


def test_distance_accepts_lists_and_checks_length():
    a = np.zeros(len(DESCRIPTOR_NAMES), np.float32)
    b = a.copy()
    b[0] = 0.1
    assert expression_distance(a, a) == 0.0
    assert expression_distance(a.tolist(), b.tolist()) == pytest.approx(0.1 * np.sqrt(WEIGHTS[0]))
    assert expression_distance(a, b, weights=np.ones_like(a)) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        expression_distance(a[:-1], b[:-1])


def test_degenerate_landmarks_raise():
    with pytest.raises(ValueError):
        expression_descriptor(np.zeros((68, 2), np.float32))
