"""Mouth checks on real faces (the demo corpus, London set) and artifact cases built from them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from qc import artifact_cases as ac
from qc.decide import (
    REASON_GHOST_TEETH,
    REASON_MOUTH_BLUR,
    REASON_MOUTH_SEAM,
    REASON_MOUTH_STATE,
    Scores,
    Thresholds,
    failed_checks,
)
from qc.mouth import mouth_scores
from tests.conftest import london_identities

T = Thresholds.from_config(load_config().qc)
MOUTH_REASONS = {REASON_GHOST_TEETH, REASON_MOUTH_SEAM, REASON_MOUTH_BLUR, REASON_MOUTH_STATE}


@pytest.fixture(scope="module")
def faces(demo_face):
    """identity -> expression -> (aligned image, landmarks) for the 12 demo identities."""
    return {i: {e: (demo_face(i, e)[2].image, demo_face(i, e)[2].landmarks68) for e in ("neutral", "smiling")}
            for i in london_identities()}


def _mouth_reasons(img: np.ndarray, lm: np.ndarray, t_img: np.ndarray, t_lm: np.ndarray) -> set[str]:
    r, t = mouth_scores(img, lm), mouth_scores(t_img, t_lm)
    s = Scores(face_found=True, r_mouth_aspect=r.mouth_aspect, t_mouth_aspect=t.mouth_aspect, r_teeth=r.teeth_share,
               t_teeth=t.teeth_share, r_lip_line=r.lip_line_whiteness, mouth_seam=r.seam_score,
               mouth_sharpness_ratio=r.sharpness_ratio)
    return set(failed_checks(s, T)) & MOUTH_REASONS


def test_real_faces_pass_against_themselves(faces):
    flagged = [(i, e) for i, by in faces.items() for e, (img, lm) in by.items() if _mouth_reasons(img, lm, img, lm)]
    assert len(flagged) <= 1, flagged  # 24 real photos: at most one false alarm


def test_teeth_ghosted_over_closed_lips_are_rejected(faces):
    donors = [by["smiling"] for by in faces.values() if mouth_scores(*by["smiling"]).teeth_share > 0.1]
    assert donors
    hits = []
    for k, (_, by) in enumerate(sorted(faces.items())):
        img, lm = by["neutral"]
        ghost = ac.ghost_teeth(img, lm, *donors[k % len(donors)], alpha=0.65)
        hits.append(REASON_GHOST_TEETH in _mouth_reasons(ghost, lm, img, lm))
    assert sum(hits) >= 0.6 * len(hits), hits


def test_seams_and_blur_are_rejected_with_their_codes(faces):
    ids = sorted(faces)
    seams, blurs = [], []
    for k, ident in enumerate(ids):
        img, lm = faces[ident]["neutral"]
        donor = faces[ids[(k + 5) % len(ids)]]["neutral"][0]
        seams.append(REASON_MOUTH_SEAM in _mouth_reasons(ac.seam(img, lm, donor, gain=1.25), lm, img, lm))
        blurs.append(REASON_MOUTH_BLUR in _mouth_reasons(ac.blur(img, lm, 0.05), lm, img, lm))
    assert sum(seams) >= 0.75 * len(ids), seams
    assert all(blurs), blurs


def test_mouth_tint_is_colour_in_the_mouth_beyond_the_skin_around_it(faces):
    """0 on a greyscale face, a few units to tens on a colour one (lips redder than skin), unchanged by a tint of
    the whole face, and large for a tinted strip painted into a greyscale mouth."""
    img, lm = faces[sorted(faces)[0]]["smiling"]
    grey = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    assert mouth_scores(grey, lm).tint == 0.0
    sepia = np.clip(grey.astype(np.float32) * np.array([1.0, 0.9, 0.75]), 0, 255).astype(np.uint8)
    assert mouth_scores(sepia, lm).tint < 4.0  # the whole face's tint cancels against the skin around the mouth
    assert mouth_scores(img, lm).tint > 4.0
    assert mouth_scores(ac.tinted_strip(grey, lm, np.random.default_rng(0)), lm).tint > 15.0
