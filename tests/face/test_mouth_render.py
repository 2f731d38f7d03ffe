"""How the CPU transfer renders R's mouth (stages/face/mouth_render.py): where the carrier's mouth is in the wrong
state for T, j's photo in T's state (the mouth donor) gives the mouth, warped onto the new landmarks and blended in; a
donor in the wrong state, or none, leaves the painted mouth rules; the carrier's own mouth is rendered the same smooth
way; nothing comes from T's pixels; the Poisson blend keeps the donor's gradients and changes nothing outside its
region."""

from __future__ import annotations

import numpy as np

from stages.face.landmark_warp import LandmarkWarpTransferer, transfer_geometry
from stages.face.mouth import OPEN_ASPECT, TEETH_SHARE, mouth_aspect, polygon_mask, teeth_share
from stages.face.mouth_render import (
    donor_fits,
    paste_mouth,
    paste_region,
    render_mouth,
    smooth_warp,
    without_teeth,
)
from stages.face.protocols import TransferRequest


def _detected(detector, rgb):
    faces = detector.detect(rgb)
    assert len(faces) == 1
    return faces[0].landmarks68


def _request(demo_face, t_key, s_key, carrier_key, donor_key=None) -> TransferRequest:
    _, _, t = demo_face(*t_key)
    _, _, s = demo_face(*s_key)
    _, _, c = demo_face(*carrier_key)
    d = demo_face(*donor_key)[2] if donor_key else None
    return TransferRequest(c.image, c.landmarks68, s.landmarks68, t.image, t.landmarks68, seed=5,
                           mouth_rgb=None if d is None else d.image,
                           mouth_landmarks=None if d is None else d.landmarks68)


def _lip_error(out: np.ndarray, reference: np.ndarray, lm: np.ndarray) -> float:
    """Mean absolute RGB difference on the lips (outer-lip polygon of lm)."""
    lips = polygon_mask(np.asarray(lm, np.float64).reshape(68, 2)[48:60], *out.shape[:2]) > 127
    return float(np.abs(out[lips].astype(np.float64) - reference[lips].astype(np.float64)).mean())


def test_closing_takes_j_s_closed_mouth_instead_of_painting_one(detector, demo_face):
    # T: 004 neutral (closed); S: 004 smiling; carrier: 009 smiling, open with teeth; donor: 009 neutral (closed).
    req = _request(demo_face, ("004", "neutral"), ("004", "smiling"), ("009", "smiling"), ("009", "neutral"))
    tr = LandmarkWarpTransferer()
    out, rule = tr.transfer_with_rule(req)
    assert rule == "donor_mouth" and tr.rule_for(req) == "donor_mouth"
    lm = _detected(detector, out)
    assert mouth_aspect(lm) < OPEN_ASPECT and teeth_share(out, lm) < 0.01, (mouth_aspect(lm), teeth_share(out, lm))
    # The lips are the donor's real lips where the transfer puts them: closer to the warped donor than the painted
    # closing (v3) is.
    new = transfer_geometry(req.carrier_landmarks, req.source_landmarks, req.target_landmarks).astype(np.float64)
    warped = smooth_warp(without_teeth(req.mouth_rgb, req.mouth_landmarks), req.mouth_landmarks, new,
                         (0, 0, out.shape[1], out.shape[0]))
    painted, painted_rule = LandmarkWarpTransferer(mouth_donors=False).transfer_with_rule(req)
    assert painted_rule == "close_lips"
    assert _lip_error(out, warped, new) < 0.5 * _lip_error(painted, warped, new)
    # Nothing of T's pixels (identity i): another T image with the same landmarks gives the same R.
    blank = TransferRequest(req.carrier_rgb, req.carrier_landmarks, req.source_landmarks, np.zeros_like(req.target_rgb),
                            req.target_landmarks, seed=5, mouth_rgb=req.mouth_rgb, mouth_landmarks=req.mouth_landmarks)
    np.testing.assert_array_equal(tr.transfer([blank])[0], out)


def test_opening_takes_j_s_open_mouth_instead_of_a_synthetic_interior(detector, demo_face):
    # T: 010 smiling (open, teeth); S: 010 neutral; carrier: 009 neutral (closed); donor: 009 smiling (open).
    req = _request(demo_face, ("010", "smiling"), ("010", "neutral"), ("009", "neutral"), ("009", "smiling"))
    assert mouth_aspect(req.mouth_landmarks) > OPEN_ASPECT
    out, rule = LandmarkWarpTransferer().transfer_with_rule(req)
    assert rule == "donor_mouth"
    lm = _detected(detector, out)
    assert mouth_aspect(lm) > OPEN_ASPECT and teeth_share(out, lm) > TEETH_SHARE


def test_a_donor_in_the_carrier_s_state_or_none_leaves_the_painted_rules(demo_face):
    wrong = _request(demo_face, ("004", "neutral"), ("004", "smiling"), ("009", "smiling"), ("009", "smiling"))
    new = transfer_geometry(wrong.carrier_landmarks, wrong.source_landmarks, wrong.target_landmarks)
    assert not donor_fits("close_lips", wrong.mouth_rgb, wrong.mouth_landmarks, new)
    assert LandmarkWarpTransferer().rule_for(wrong) == "close_lips"
    none = _request(demo_face, ("004", "neutral"), ("004", "smiling"), ("009", "smiling"))
    assert LandmarkWarpTransferer().rule_for(none) == "close_lips"
    # a donor is never used where the carrier's mouth is already in T's state
    assert not donor_fits("warp", wrong.mouth_rgb, wrong.mouth_landmarks, new)
    assert not donor_fits("carrier_interior", wrong.mouth_rgb, wrong.mouth_landmarks, new)


def test_paste_changes_only_the_grown_lip_region_and_is_exact_for_the_same_image(demo_face):
    _, _, face = demo_face("004", "neutral")
    lm = np.asarray(face.landmarks68, np.float64)
    h, w = face.image.shape[:2]
    region = paste_region(lm, h, w)
    np.testing.assert_array_equal(paste_mouth(face.image, face.image, region), face.image)
    lips = polygon_mask(lm[48:60], h, w) > 127
    assert region[lips].all() and region.sum() > 1.5 * lips.sum()
    other = paste_mouth(face.image, np.full_like(face.image, 90), region)
    np.testing.assert_array_equal(other[~region], face.image[~region])
    # a flat donor has no gradients: the clone is the smooth membrane over the region's edge, so no lip survives
    both = region[1:] & region[:-1]
    def step(img):
        return np.abs(np.diff(img.astype(float), axis=0))[both].mean()  # vertical gradient inside the region
    assert step(other) < 0.2 * step(face.image), (step(other), step(face.image))
    # the donor's gradients are kept exactly: a donor that differs from the face by a constant gives the face back
    shifted = np.clip(face.image.astype(int) + 20, 0, 255).astype(np.uint8)
    assert np.abs(paste_mouth(face.image, shifted, region).astype(int) - face.image).max() <= 1


def test_a_carrier_already_in_t_s_state_keeps_its_own_mouth_rendered_smoothly(demo_face):
    """T 004 neutral, S 004 smiling, carrier 009 neutral (closed, as T): rule warp, and the mouth is the carrier's own,
    rendered by render_mouth from the carrier (the donor is not used even when given)."""
    req = _request(demo_face, ("004", "neutral"), ("004", "smiling"), ("009", "neutral"), ("009", "smiling"))
    tr = LandmarkWarpTransferer()
    out, rule = tr.transfer_with_rule(req)
    assert rule == "warp"
    rough, _ = LandmarkWarpTransferer(smooth_mouths=False).transfer_with_rule(req)
    new = transfer_geometry(req.carrier_landmarks, req.source_landmarks, req.target_landmarks).astype(np.float64)
    np.testing.assert_array_equal(out, render_mouth(rough, req.carrier_rgb, req.carrier_landmarks, new))
    region = paste_region(new, *out.shape[:2])
    np.testing.assert_array_equal(out[~region], rough[~region])
