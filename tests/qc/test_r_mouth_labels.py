"""50 generated R mouths from a London round, labelled by eye (tests/fixtures/r_mouths/labels.json: 17 visibly
artificial, 33 fine): the share of artificial ones the mouth checks reject, with thresholds calibrated on the
London set's real mouths as a London run calibrates them. Issue 19's target is >= 90 %; the checks do not reach
it yet (benchmarks/RESULTS.md), so that test is a strict xfail: it fails the day they do, to be made a plain test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_config
from qc.decide import REASON_GHOST_TEETH, REASON_MOUTH_SEAM, REASON_MOUTH_UNREAL, Scores, Thresholds, failed_checks
from qc.mouth import mouth_scores
from qc.mouth_calibration import calibrate_real_mouths, measure_real_mouths
from qc.mouth_realism import mouth_descriptor, mouth_shape

FIXTURE = Path(__file__).parents[1] / "fixtures" / "r_mouths"
QC = load_config().qc
# the single-face mouth checks that a crop of R's lower face can decide (blur needs the eyes; state needs T)
CHECKS = {REASON_GHOST_TEETH, REASON_MOUTH_SEAM, REASON_MOUTH_UNREAL}


def labelled_mouths() -> list[tuple[dict, np.ndarray]]:
    """(label entry, RGB crop of R's lower face) for the 50 labelled mouths."""
    meta = json.loads((FIXTURE / "labels.json").read_text())
    sheet = np.asarray(Image.open(FIXTURE / "r_mouths.png").convert("RGB"))
    w, h = meta["tile"]
    cols = meta["columns"]
    return [(m, sheet[(m["index"] // cols) * h:(m["index"] // cols + 1) * h, (m["index"] % cols) * w:
                      (m["index"] % cols + 1) * w]) for m in meta["mouths"]]


@pytest.fixture(scope="module")
def decisions(london_faces) -> list[tuple[bool, bool]]:
    """(labelled artificial, rejected by a mouth check) per labelled R."""
    real = measure_real_mouths([(f.identity, f.image, f.landmarks68) for by in london_faces.values()
                                for f in by.values()])
    cal = calibrate_real_mouths(real, Thresholds.from_config(QC), QC)
    assert cal.bank is not None
    out = []
    for m, crop in labelled_mouths():
        lm = np.asarray(m["landmarks68"], np.float64).reshape(68, 2)
        s = mouth_scores(crop, lm)
        realism = cal.bank.score(mouth_descriptor(crop, lm, cal.bank.use_chroma), mouth_shape(lm),
                                 exclude=(m["identity_i"], m["identity_j"]))
        scores = Scores(face_found=True, r_mouth_aspect=s.mouth_aspect, r_teeth=s.teeth_share,
                        r_lip_line=s.lip_line_whiteness, mouth_seam=s.seam_score, mouth_realism=realism)
        out.append((m["label"] == "artificial", bool(set(failed_checks(scores, cal.thresholds)) & CHECKS)))
    return out


def test_fixture_is_fifty_labelled_london_mouths():
    mouths = labelled_mouths()
    assert len(mouths) == 50 and {m["label"] for m, _ in mouths} == {"artificial", "fine"}
    assert all(crop.shape == (112, 160, 3) for _, crop in mouths)


def test_false_rejects_on_fine_mouths_are_few(decisions):
    fine = [rejected for artificial, rejected in decisions if not artificial]
    assert len(fine) == 33
    assert sum(fine) <= 2, f"{sum(fine)} of {len(fine)} fine R mouths rejected by a mouth check"


@pytest.mark.xfail(strict=True, reason="issue 19 target not reached: see benchmarks/RESULTS.md (mouth checks)")
def test_at_least_ninety_percent_of_artificial_mouths_are_rejected(decisions):
    art = [rejected for artificial, rejected in decisions if artificial]
    assert len(art) == 17
    assert np.mean(art) >= 0.9, f"{sum(art)} of {len(art)} artificial R mouths rejected"
