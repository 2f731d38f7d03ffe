"""The dlib detector and embedder on real London faces."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from core.hashing import sha256_file
from pipeline.config import load_config
from stages.face.dlib_models import DlibDetector, dlib_model_dir
from stages.face.types import DetectedFace, keypoints5_from_68
from tests.face.conftest import demo_rgb


def test_model_dir_and_hashes(detector, embedder):
    folder = dlib_model_dir()
    assert (folder / "shape_predictor_68_face_landmarks.dat").is_file()
    for model in (detector, embedder):
        assert model.model_id and len(model.model_sha256) == 64
        int(model.model_sha256, 16)
    assert detector.model_sha256 != embedder.model_sha256
    assert sha256_file(folder / "dlib_face_recognition_resnet_model_v1.dat") == embedder.model_sha256


def test_missing_model_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="face-recognition-models"):
        dlib_model_dir()


def test_from_config_uses_upsample():
    det = DlibDetector.from_config(load_config(overrides=["ingest.detector_upsample=1"]).ingest)
    assert det.upsample == 1


def test_detects_one_face_with_landmarks(detector):
    rgb = demo_rgb("001", "neutral")
    faces = detector.detect(rgb)
    assert len(faces) == 1
    f = faces[0]
    assert f.box.shape == (4,) and f.short_side > 100 and f.score > 0
    assert f.landmarks68.shape == (68, 2) and f.landmarks68.dtype == np.float32
    x0, y0, x1, y1 = f.box
    inner = f.landmarks68[17:]  # brows, eyes, nose, mouth lie inside the box (with a small margin)
    assert (inner[:, 0] > x0 - 10).all() and (inner[:, 0] < x1 + 10).all()
    assert (inner[:, 1] > y0 - 25).all() and (inner[:, 1] < y1 + 10).all()
    np.testing.assert_allclose(f.keypoints5, keypoints5_from_68(f.landmarks68))
    le, re = f.keypoints5[0], f.keypoints5[1]
    assert le[0] < re[0] and abs(le[1] - re[1]) < 15  # image-left eye left of the other, roughly level
    assert f.keypoints5[2, 1] > le[1] and f.keypoints5[3, 1] > f.keypoints5[2, 1]  # nose below eyes, mouth below
    np.testing.assert_allclose(detector.landmarks(rgb, f.box), f.landmarks68)


def test_no_face_on_blank_images(detector):
    assert detector.detect(np.full((300, 400, 3), 200, np.uint8)) == []
    assert detector.detect(np.zeros((64, 64, 3), np.uint8)) == []


def test_two_faces_side_by_side(detector):
    pair = np.hstack([demo_rgb("001", "neutral"), demo_rgb("002", "smiling")])
    faces = detector.detect(pair)
    assert len(faces) == 2
    centres = sorted(float(f.box[0] + f.box[2]) / 2 for f in faces)
    assert centres[0] < 512 < centres[1]


def test_embedder_unit_vectors_and_identity_order(detector, embedder, demo_face):
    embs = {}
    for ident in ("001", "002", "003"):
        for expr in ("neutral", "smiling"):
            rgb, face, _ = demo_face(ident, expr)
            v = embedder.embed(rgb, face)
            assert v.shape == (128,) and v.dtype == np.float32
            assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
            embs[ident, expr] = v
    for ident in ("001", "002", "003"):
        same = float(embs[ident, "neutral"] @ embs[ident, "smiling"])
        others = [float(embs[ident, "neutral"] @ embs[o, e]) for o in ("001", "002", "003") if o != ident
                  for e in ("neutral", "smiling")]
        assert same > 0.95 and same > max(others), (ident, same, others)


def test_embedder_computes_landmarks_when_missing(embedder, demo_face):
    rgb, face, _ = demo_face("004", "neutral")
    with_lm = embedder.embed(rgb, face)
    bare = DetectedFace(box=face.box, score=face.score, keypoints5=face.keypoints5, landmarks68=None)
    without = embedder.embed(rgb, bare)
    assert float(with_lm @ without) > 0.999
    with pytest.raises(ValueError):
        embedder.embed(rgb.astype(np.float32), face)
