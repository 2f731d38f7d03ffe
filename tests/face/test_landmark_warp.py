"""Piecewise-affine warp and the landmark-warp expression transferer on real faces."""

from __future__ import annotations

import numpy as np

from pipeline.config import load_config
from stages.face.expression import expression_descriptor, expression_distance
from stages.face.landmark_warp import LandmarkWarpTransferer, piecewise_affine_warp, transfer_geometry
from stages.face.protocols import TransferRequest


def test_identity_warp_returns_the_input(demo_face):
    _, _, a = demo_face("001", "neutral")
    out = piecewise_affine_warp(a.image, a.landmarks68, a.landmarks68, a.image.shape)
    assert out.shape == a.image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - a.image.astype(int)).max() <= 1
    out2 = piecewise_affine_warp(a.image, a.landmarks68, a.landmarks68, a.image.shape, add_anchors=False)
    assert np.abs(out2.astype(int) - a.image.astype(int)).max() <= 1


def test_translation_and_output_size():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    src = rng.uniform(20, 100, (30, 2))
    out = piecewise_affine_warp(img, src, src + [5, 3], img.shape)
    np.testing.assert_array_equal(out[3 + 20:100, 5 + 20:140], img[20:97, 20:135])
    half = piecewise_affine_warp(img, src, src * 0.5, (60, 80))
    assert half.shape == (60, 80, 3)


def test_zero_motion_keeps_the_carrier(demo_face):
    _, _, c = demo_face("003", "neutral")
    req = TransferRequest(c.image, c.landmarks68, c.landmarks68, c.image, c.landmarks68, seed=0)
    (out,) = LandmarkWarpTransferer().transfer([req])
    assert np.abs(out.astype(int) - c.image.astype(int)).mean() < 0.5


def test_transfer_moves_the_carrier_towards_the_target_expression(detector, demo_face):
    _, _, carrier = demo_face("002", "neutral")
    _, _, s = demo_face("004", "neutral")
    _, _, t = demo_face("004", "smiling")
    tr = LandmarkWarpTransferer.from_config(load_config().expression_transfer)
    assert tr.model_id == "landmark_warp_v4" and len(tr.model_sha256) == 64
    reqs = [TransferRequest(carrier.image, carrier.landmarks68, s.landmarks68, t.image, t.landmarks68, seed=0),
            TransferRequest(t.image, t.landmarks68, t.landmarks68, s.image, s.landmarks68, seed=1)]
    out, back = tr.transfer(reqs)
    assert out.shape == carrier.image.shape and out.dtype == np.uint8
    faces = detector.detect(out)
    assert len(faces) == 1
    d_t = expression_descriptor(t.landmarks68)
    before = expression_distance(expression_descriptor(carrier.landmarks68), d_t)
    after = expression_distance(expression_descriptor(faces[0].landmarks68), d_t)
    assert after < 0.6 * before, (before, after)
    # The intended geometry is what the detector finds on the output (within a few pixels).
    new = transfer_geometry(carrier.landmarks68, s.landmarks68, t.landmarks68)
    assert np.median(np.linalg.norm(faces[0].landmarks68 - new, axis=1)) < 3.0
    # Background far from the face does not move.
    np.testing.assert_array_equal(out[:8, :8], carrier.image[:8, :8])
    # Closing a smile (T's own smile -> its neutral) also gives a face with the neutral expression.
    faces_back = detector.detect(back)
    assert len(faces_back) == 1
    d_s = expression_descriptor(s.landmarks68)
    assert expression_distance(expression_descriptor(faces_back[0].landmarks68), d_s) < \
        0.6 * expression_distance(d_t, d_s)


def test_opening_mouth_changes_only_the_mouth(demo_face):
    _, _, carrier = demo_face("002", "neutral")
    _, _, s = demo_face("004", "neutral")
    _, _, t = demo_face("004", "smiling")
    req = TransferRequest(carrier.image, carrier.landmarks68, s.landmarks68, t.image, t.landmarks68, seed=0)
    filled, rule = LandmarkWarpTransferer().transfer_with_rule(req)
    plain = LandmarkWarpTransferer(mouth_rules=False).transfer([req])[0]
    assert rule == "synth_interior"
    new = transfer_geometry(carrier.landmarks68, s.landmarks68, t.landmarks68)
    x0, y0 = np.floor(new[60:68].min(axis=0)).astype(int)
    x1, y1 = np.ceil(new[60:68].max(axis=0)).astype(int)
    assert (filled != plain).any()
    outside = np.ones(filled.shape[:2], bool)
    outside[y0 - 4:y1 + 5, x0 - 4:x1 + 5] = False
    np.testing.assert_array_equal(filled[outside], plain[outside])
