"""Alignment on real London faces: crops land the 5 points on each template.

A similarity can only put real keypoints near a template (faces differ from it by a few px); so each
face's keypoints are first snapped to the nearest similarity image of the template, and then both
crop paths (FaceFusion's warp and insightface's norm_crop) must land them within 1 px of the template.
The real points' residuals are also bounded, as a check that the crops hold the face.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from insightface.utils import face_align

from stages.onnx.registry import template_points
from stages.onnx.warp import estimate_matrix, warp_face


def _snap(keypoints: np.ndarray, template: str, size: tuple[int, int]) -> np.ndarray:
    """The similarity image of the template closest to the keypoints."""
    inverse = cv2.invertAffineTransform(estimate_matrix(keypoints, template, size))
    return cv2.transform(template_points(template, size)[None], inverse)[0]


@pytest.mark.parametrize("template,size", [("arcface_128", (128, 128)), ("arcface_128", (256, 256)),
                                           ("arcface_112_v1", (256, 256)), ("ffhq_512", (512, 512)),
                                           ("arcface_112_v2", (112, 112))])
def test_facefusion_warp_lands_points_on_template(london_photos, template, size):
    dst = template_points(template, size)
    for rgb, face in london_photos:
        kps = _snap(face.keypoints5, template, size)
        crop, matrix = warp_face(rgb, kps, template, size)
        assert crop.shape == (size[1], size[0], 3)
        landed = cv2.transform(kps[None], matrix)[0]
        assert np.abs(landed - dst).max() < 1.0
        real = np.linalg.norm(cv2.transform(face.keypoints5[None], matrix)[0] - dst, axis=1)
        assert real.mean() < 0.05 * size[0]  # the real face sits on the template (a few % of the crop)


def test_insightface_norm_crop_lands_points_on_template(london_photos):
    for _rgb, face in london_photos:
        for size, template in ((112, "arcface_112_v2"), (128, "arcface_128")):
            kps = _snap(face.keypoints5, template, (size, size))
            matrix = face_align.estimate_norm(kps, size)
            landed = cv2.transform(kps[None], matrix)[0]
            assert np.abs(landed - template_points(template, (size, size))).max() < 1.0


def test_crop_content_follows_the_matrix(london_photos):
    # the crop is the frame resampled through the matrix: a bright dot drawn at the left eye ends up at the
    # template's left eye
    rgb, face = london_photos[0]
    kps = _snap(face.keypoints5, "arcface_128", (256, 256))
    marked = rgb.copy()
    cv2.circle(marked, tuple(int(round(v)) for v in kps[0]), 3, (255, 0, 255), -1)
    crop, _ = warp_face(marked, kps, "arcface_128", (256, 256))
    ys, xs = np.nonzero((crop[:, :, 0] > 200) & (crop[:, :, 1] < 60) & (crop[:, :, 2] > 200))
    assert len(xs) > 0
    assert np.hypot(xs.mean() - template_points("arcface_128", (256, 256))[0, 0],
                    ys.mean() - template_points("arcface_128", (256, 256))[0, 1]) < 1.5
