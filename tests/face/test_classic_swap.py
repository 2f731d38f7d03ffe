"""ClassicSwapper: only the face hull changes, and the result looks like the source identity."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.config import load_config
from stages.face.classic_swap import ClassicSwapper, face_hull_mask
from stages.face.types import DetectedFace, keypoints5_from_68


def _face(lm: np.ndarray) -> DetectedFace:
    x0, y0 = lm.min(axis=0)
    x1, y1 = lm.max(axis=0)
    return DetectedFace(box=np.array([x0, y0, x1, y1], np.float32), score=1.0, keypoints5=keypoints5_from_68(lm),
                        landmarks68=lm)


def test_swap_changes_only_the_face_and_carries_the_identity(detector, embedder, demo_face):
    _, _, src = demo_face("003", "smiling")
    _, _, tgt = demo_face("008", "smiling")
    # Here the target is another person (008), not j's re-posed face as in the pipeline: keeping its eyes and
    # brows (the default keep_regions) would keep 008's, so this plain-swap check keeps none.
    swapper = ClassicSwapper.from_config(load_config(overrides=["identity_swap.feather_px=9",
                                                                "identity_swap.keep_regions=[]"]).identity_swap)
    assert swapper.keep_regions == ()
    assert swapper.feather_px == 9 and swapper.model_id == "classic_swap_v3" and len(swapper.model_sha256) == 64
    target = tgt.image.copy()
    out = swapper.swap(src.image, _face(src.landmarks68), target, _face(tgt.landmarks68))
    np.testing.assert_array_equal(target, tgt.image)  # input untouched
    assert out.shape == target.shape and out.dtype == np.uint8
    hull = face_hull_mask(tgt.landmarks68, *target.shape[:2])
    outside = cv2.dilate(hull, np.ones((3, 3), np.uint8)) == 0
    np.testing.assert_array_equal(out[outside], target[outside])
    assert np.abs(out[hull > 0].astype(int) - target[hull > 0].astype(int)).mean() > 5
    faces = detector.detect(out)
    assert len(faces) == 1
    e = embedder.embed(out, faces[0])
    e_src = embedder.embed(src.image, _face(src.landmarks68))
    e_tgt = embedder.embed(tgt.image, _face(tgt.landmarks68))
    assert float(e @ e_src) > float(e @ e_tgt)
    assert float(e @ e_src) > 0.85  # the target keeps its face outline, so this is a mix (0.89 here)


def test_swap_on_a_full_photo_keeps_everything_outside_the_face(detector, demo_face):
    rgb_t, face_t, _ = demo_face("009", "neutral")
    rgb_s, face_s, _ = demo_face("010", "neutral")
    out = ClassicSwapper(feather_px=11).swap(rgb_s, face_s, rgb_t, face_t)
    hull = face_hull_mask(face_t.landmarks68, *rgb_t.shape[:2])
    outside = cv2.dilate(hull, np.ones((3, 3), np.uint8)) == 0
    np.testing.assert_array_equal(out[outside], rgb_t[outside])
    assert (out[hull > 0] != rgb_t[hull > 0]).any()


def test_swap_needs_68_landmarks(demo_face):
    _, _, a = demo_face("001", "neutral")
    bare = DetectedFace(box=np.array([0, 0, 10, 10], np.float32), score=1.0, keypoints5=a.keypoints5)
    with pytest.raises(ValueError, match="68 landmarks"):
        ClassicSwapper().swap(a.image, bare, a.image, _face(a.landmarks68))
    with pytest.raises(ValueError, match="target"):
        ClassicSwapper().swap(a.image, _face(a.landmarks68), a.image, bare)
