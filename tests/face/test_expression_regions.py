"""Expression regions: landmark masks, and the classic swap keeping the transfer's eyes, brows and mouth."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import ConfigError
from pipeline.config import load_config
from stages.face.classic_swap import ClassicSwapper
from stages.face.expression_regions import (
    DEFAULT_KEEP_REGIONS,
    REGION_POINTS,
    keep_expression_regions,
    region_core,
    region_mask,
)
from stages.face.landmark_warp import LandmarkWarpTransferer
from stages.face.mouth import polygon_mask
from stages.face.protocols import TransferRequest
from stages.face.types import face_from_landmarks


def _at(mask: np.ndarray, point: np.ndarray) -> float:
    x, y = np.round(point).astype(int)
    return float(mask[y, x])


def test_masks_cover_their_landmarks_and_nothing_far_away(demo_face):
    _, _, a = demo_face("003", "smiling")
    lm, (h, w) = a.landmarks68, a.image.shape[:2]
    for region, points in REGION_POINTS.items():
        m = region_mask(lm, [region], h, w)
        assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
        assert all(_at(m, lm[p]) == 1.0 for p in points), region
        for far in (30, 8, 2, 14):  # nose tip, chin, both cheeks
            assert _at(m, lm[far]) == 0.0, (region, far)
    eyes = region_mask(lm, ["left-eye"], h, w)
    assert _at(eyes, lm[[42, 45]].mean(axis=0)) == 0.0  # one eye's region leaves the other eye alone
    both = region_mask(lm, DEFAULT_KEEP_REGIONS, h, w)
    assert np.array_equal(both, np.maximum.reduce([region_mask(lm, [r], h, w) for r in DEFAULT_KEEP_REGIONS]))
    assert not region_mask(lm, (), h, w).any()
    # feathered: a ramp outside the core, no hard edge
    m = region_mask(lm, ["left-eye"], h, w)
    ramp = (m > 0) & (m < 1)
    assert ramp.sum() > region_core(lm, "left-eye", h, w).sum() * 0.3
    assert (region_mask(lm, ["left-eye"], h, w, feather=0.0) > 0).sum() < 0.8 * (m > 0).sum()


def test_an_eye_region_follows_the_opening_and_keeps_the_lids_of_a_closed_eye(demo_face):
    _, _, a = demo_face("003", "neutral")
    lm, (h, w) = a.landmarks68.copy(), a.image.shape[:2]
    closed = lm.copy()
    for up, down in ((37, 41), (38, 40)):
        mid = (lm[up] + lm[down]) / 2
        closed[up] = closed[down] = mid
    wide = lm.copy()
    for up, down in ((37, 41), (38, 40)):
        wide[up] -= (0, 4)
        wide[down] += (0, 4)
    areas = [region_core(x, "left-eye", h, w).sum() for x in (closed, lm, wide)]
    assert areas[0] < areas[1] < areas[2]
    eye_w = float(np.linalg.norm(lm[39] - lm[36]))
    ys = np.nonzero(region_core(closed, "left-eye", h, w))[0]
    assert ys.max() - ys.min() > 0.5 * eye_w  # both lids of a closed eye are kept


def test_unknown_regions_are_refused():
    with pytest.raises(ValueError, match="unknown expression regions"):
        region_mask(np.zeros((68, 2)), ["nose"], 10, 10)
    with pytest.raises(ConfigError, match="keep_regions"):
        load_config(overrides=["identity_swap.keep_regions=[nose]"])
    assert load_config().identity_swap.keep_regions == DEFAULT_KEEP_REGIONS
    assert load_config(overrides=["identity_swap.keep_regions=[]"]).identity_swap.keep_regions == ()


def _transfer(demo_face):
    """R's inputs as the pipeline makes them: T = 010 smiling, S = 010 neutral, carrier = j's neutral photo
    re-posed by the landmark warp, swap source = j's smiling photo (another expression than the transfer's)."""
    _, _, t = demo_face("010", "smiling")
    _, _, s = demo_face("010", "neutral")
    _, _, c = demo_face("004", "neutral")
    _, _, src = demo_face("004", "smiling")
    req = TransferRequest(c.image, c.landmarks68, s.landmarks68, t.image, t.landmarks68, seed=1)
    return LandmarkWarpTransferer().transfer([req])[0], src


def test_classic_swap_keeps_the_transfers_eyes_brows_and_mouth(detector, demo_face):
    moved, src = _transfer(demo_face)
    (tf,) = detector.detect(moved)
    lm, (h, w) = tf.landmarks68, moved.shape[:2]
    args = (src.image, face_from_landmarks(src.landmarks68), moved, tf)
    after = ClassicSwapper().swap(*args)
    plain = ClassicSwapper(keep_regions=()).swap(*args)
    mouth_only = ClassicSwapper(keep_regions=("mouth",)).swap(*args)
    for region in DEFAULT_KEEP_REGIONS:
        core = region_core(lm, region, h, w)
        np.testing.assert_array_equal(after[core], moved[core])  # the transfer's own pixels
        if "brow" not in region:  # (the brows lie on the face hull's feathered edge: the swap barely reaches them)
            assert np.abs(plain[core].astype(int) - moved[core].astype(int)).mean() > 2, region  # the swap acts
    lips = polygon_mask(lm[48:60], h, w) > 127
    np.testing.assert_array_equal(mouth_only[lips], moved[lips])  # the swap before issue 19 kept the mouth only
    eye = region_core(lm, "left-eye", h, w)
    assert np.abs(mouth_only[eye].astype(int) - moved[eye].astype(int)).mean() > 2
    # Outside the regions and their feather the swap is unchanged: identity still comes from the source.
    away = region_mask(lm, DEFAULT_KEEP_REGIONS, h, w) == 0
    np.testing.assert_array_equal(after[away], plain[away])
    assert (after[away] != moved[away]).any()


def test_keep_expression_regions_blends_only_inside_the_mask(demo_face):
    moved, src = _transfer(demo_face)
    lm = demo_face("004", "neutral")[2].landmarks68  # any 68 points inside the frame
    out = keep_expression_regions(src.image, moved, lm, ["right-eyebrow"])
    m = region_mask(lm, ["right-eyebrow"], *moved.shape[:2])
    np.testing.assert_array_equal(out[m == 0], src.image[m == 0])
    np.testing.assert_array_equal(out[m == 1], moved[m == 1])
    assert keep_expression_regions(src.image, moved, lm, ()) is src.image
    with pytest.raises(ValueError, match="differ in size"):
        keep_expression_regions(src.image[:10], moved, lm, ["mouth"])
