"""Mouth checks on greyscale photos (issue 19, item 3): the luminance path of qc/mouth.py on the London set turned
grey, the colour path unchanged, and ghosted teeth still caught without chroma."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_config
from qc import artifact_cases as ac
from qc import mouth
from qc.decide import REASON_GHOST_TEETH, Scores, Thresholds, failed_checks
from qc.mouth import face_has_chroma, lip_line_whiteness, mouth_scores, teeth_share

T = Thresholds.from_config(load_config().qc)

# (teeth_share, lip_line_whiteness) of London faces by the colour path before the luminance path was added
# (git 98a848a, qc/mouth.py), exact floats.
OLD_COLOUR = {
    ("001", "neutral"): (0.0, -0.2621765833269606),
    ("001", "smiling"): (0.0, -0.22280223958869527),
    ("002", "neutral"): (0.0, -0.3013288873570791),
    ("002", "smiling"): (0.1499639509733237, 0.5331106253345396),
    ("003", "neutral"): (0.0, -0.23153278344988848),
    ("003", "smiling"): (0.0, -0.25661932622605566),
}


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L").convert("RGB"))


def _ghost(img: np.ndarray, lm: np.ndarray) -> bool:
    s = mouth_scores(img, lm)
    scores = Scores(face_found=True, r_mouth_aspect=s.mouth_aspect, r_teeth=s.teeth_share,
                    r_lip_line=s.lip_line_whiteness)
    return REASON_GHOST_TEETH in failed_checks(scores, T)


@pytest.fixture(scope="module")
def closed(london_faces):
    """(image, landmarks) of every London photo whose mouth is clearly closed (landmarks' inner-lip opening)."""
    return [(f.image, f.landmarks68) for by in london_faces.values() for f in by.values()
            if mouth.mouth_aspect(f.landmarks68) < T.mouth_closed_aspect]


def test_colour_scores_are_the_old_colour_path(london_faces):
    for (ident, expr), (teeth, line) in OLD_COLOUR.items():
        f = london_faces[ident][expr]
        assert face_has_chroma(f.image, f.landmarks68)
        assert teeth_share(f.image, f.landmarks68) == teeth
        assert lip_line_whiteness(f.image, f.landmarks68) == line


def test_no_colour_london_face_takes_the_grey_path(london_faces):
    faces = [f for by in london_faces.values() for f in by.values()]
    assert len(faces) == 204
    assert all(face_has_chroma(f.image, f.landmarks68) for f in faces)
    assert not any(face_has_chroma(_grey(f.image), f.landmarks68) for f in faces[:10])


def test_grey_closed_mouths_are_not_flagged_ghost_teeth(closed):
    assert len(closed) >= 140
    flagged = sum(_ghost(_grey(img), lm) for img, lm in closed)
    # target 2 %: measured 3 of 145 (2.1 %, benchmarks/RESULTS.md); the colour path flagged all 145 grey
    assert flagged <= 3, flagged


def test_grey_path_keeps_teeth_visible_on_open_smiles(london_faces):
    toothy = [f for by in london_faces.values() for f in by.values() if teeth_share(f.image, f.landmarks68) > 0.1]
    assert len(toothy) >= 30
    grey_share = [teeth_share(_grey(f.image), f.landmarks68) for f in toothy]
    assert np.mean([s > T.teeth_absent for s in grey_share]) >= 0.9  # never "clearly no teeth" where colour sees


def test_ghosted_teeth_are_still_caught_on_grey(london_faces, closed):
    donors = [(f.image, f.landmarks68) for by in london_faces.values() for f in by.values()
              if teeth_share(f.image, f.landmarks68) > 0.2]
    assert donors
    bases = [(img, lm) for img, lm in closed[:40] if not _ghost(_grey(img), lm)]
    hits = [_ghost(_grey(ac.ghost_teeth(img, lm, *donors[k % len(donors)], alpha=1.0)), lm)
            for k, (img, lm) in enumerate(bases)]
    # measured 19 of 40 (the colour path catches 38 of the same cases in colour): weak, but caught
    assert len(bases) >= 38 and sum(hits) >= 0.4 * len(bases), sum(hits)
