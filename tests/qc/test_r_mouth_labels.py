"""50 generated R mouths from a London round, labelled by eye (tests/fixtures/r_mouths/labels.json: 17 visibly
artificial, 33 fine), each with its reference (references.json / references.png: the carrier photo R was made
from, same crop box): the share of artificial ones the mouth checks reject, with thresholds calibrated on the
London set's real mouths as a London run calibrates them, the reference check included (R against its carrier,
qc/mouth_reference.py). Issue 19's target is >= 90 %; the checks do not reach it yet (benchmarks/RESULTS.md), so
that test is a strict xfail: it fails the day they do, to be made a plain test. The reference check's own
behaviour on London's real mouths (legit R pass, damaged R fail) is tested here too, on the same calibration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_config
from qc import artifact_cases as ac
from qc.decide import (
    REASON_GHOST_TEETH,
    REASON_MOUTH_REFERENCE,
    REASON_MOUTH_SEAM,
    REASON_MOUTH_UNREAL,
    Scores,
    Thresholds,
    failed_checks,
)
from qc.mouth import mouth_scores
from qc.mouth_calibration import MouthCalibration, calibrate_real_mouths, measure_real_mouths
from qc.mouth_detector import r_inputs
from qc.mouth_realism import mouth_descriptor, mouth_shape
from qc.mouth_reference import reference_features, resample_like_generation

FIXTURE = Path(__file__).parents[1] / "fixtures" / "r_mouths"
QC = load_config().qc
# the single-face mouth checks that a crop of R's lower face can decide (blur needs the eyes; state needs T)
CHECKS = {REASON_GHOST_TEETH, REASON_MOUTH_SEAM, REASON_MOUTH_UNREAL, REASON_MOUTH_REFERENCE}


def _tiles(meta: dict, sheet_name: str, entries: list[dict]) -> list[np.ndarray]:
    sheet = np.asarray(Image.open(FIXTURE / sheet_name).convert("RGB"))
    w, h = meta["tile"]
    cols = meta["columns"]
    return [sheet[(m["index"] // cols) * h:(m["index"] // cols + 1) * h,
                  (m["index"] % cols) * w:(m["index"] % cols + 1) * w] for m in entries]


def labelled_mouths() -> list[tuple[dict, np.ndarray]]:
    """(label entry, RGB crop of R's lower face) for the 50 labelled mouths."""
    meta = json.loads((FIXTURE / "labels.json").read_text())
    return list(zip(meta["mouths"], _tiles(meta, "r_mouths.png", meta["mouths"]), strict=True))


def references() -> list[tuple[dict, np.ndarray]]:
    """(reference entry, RGB crop of the carrier with R's crop box), in the order of labelled_mouths."""
    meta = json.loads((FIXTURE / "references.json").read_text())
    return list(zip(meta["references"], _tiles(meta, "references.png", meta["references"]), strict=True))


@pytest.fixture(scope="module")
def calibration(london_faces) -> MouthCalibration:
    """The mouth calibration a London run makes on its real mouths (reference check included)."""
    faces = [(f.identity, f.image, f.landmarks68) for by in london_faces.values() for f in by.values()]
    cal = calibrate_real_mouths(measure_real_mouths(faces), Thresholds.from_config(QC), QC)
    assert cal.bank is not None and cal.reference is not None
    return cal


@pytest.fixture(scope="module")
def decisions(calibration) -> list[tuple[bool, bool]]:
    """(labelled artificial, rejected by a mouth check) per labelled R."""
    cal = calibration
    assert cal.bank is not None and cal.reference is not None
    out = []
    for (m, crop), (ref, ref_crop) in zip(labelled_mouths(), references(), strict=True):
        lm = np.asarray(m["landmarks68"], np.float64).reshape(68, 2)
        s = mouth_scores(crop, lm)
        realism = cal.bank.score(mouth_descriptor(crop, lm, cal.bank.use_chroma), mouth_shape(lm),
                                 exclude=(m["identity_i"], m["identity_j"]))
        differs = cal.reference.score(reference_features(crop, lm), reference_features(
            ref_crop, np.asarray(ref["landmarks68"], np.float64).reshape(68, 2)))
        scores = Scores(face_found=True, r_mouth_aspect=s.mouth_aspect, r_teeth=s.teeth_share,
                        r_lip_line=s.lip_line_whiteness, mouth_seam=s.seam_score, mouth_realism=realism,
                        mouth_reference_diff=differs)
        out.append((m["label"] == "artificial", bool(set(failed_checks(scores, cal.thresholds)) & CHECKS)))
    return out


def test_fixture_is_fifty_labelled_london_mouths_with_their_references():
    mouths = labelled_mouths()
    assert len(mouths) == 50 and {m["label"] for m, _ in mouths} == {"artificial", "fine"}
    assert all(crop.shape == (112, 160, 3) for _, crop in mouths)
    refs = references()
    assert [r["candidate_id"] for r, _ in refs] == [m["candidate_id"] for m, _ in mouths]
    assert all(crop.shape == (112, 160, 3) for _, crop in refs)
    # the reference is a London photo of j (the carrier), never R itself
    assert all(r["carrier_input_key"].split("/")[0] == m["identity_j"] for (r, _), (m, _) in zip(refs, mouths,
                                                                                                  strict=True))
    assert all(np.abs(a.astype(int) - b).mean() > 1 for (_, a), (_, b) in zip(refs, mouths, strict=True))


def test_legit_r_passes_and_damaged_r_fails_the_reference_check(london_faces, calibration):
    """A real London photo resampled as the generator resamples (a legit R) against the identity's other photo
    passes; the same R with a dark outline (qc/artifact_cases.py) fails the reference check alone, and a white slab
    over its closed lips the reference or the damage check (on this pairing the detector's gate takes margin -0.0,
    the other checks' common margin moves out and the reference check alone catches 1 slab of 20, 6+ before;
    benchmarks/RESULTS.md has every kind with all mouth checks)."""
    null, limit = calibration.reference, calibration.thresholds.max_mouth_reference_diff
    damage_limit = calibration.thresholds.max_mouth_damage
    assert null is not None and limit is not None and damage_limit is not None
    assert calibration.detector is not None and calibration.bank is not None
    rng = np.random.default_rng(0)
    legit, slab, outline = [], [], []
    for ident in sorted(london_faces)[:20]:
        r, ref = london_faces[ident]["neutral"], london_faces[ident]["smiling"]
        base = resample_like_generation(r.image, ident)
        ref_f = reference_features(ref.image, ref.landmarks68)
        legit.append(null.score(reference_features(base, r.landmarks68), ref_f) > limit)
        bad = ac.slab(base, r.landmarks68, rng)
        damage = float(calibration.detector.scores(r_inputs(bad, r.landmarks68, calibration.bank, (ident,),
                                                            ref_f))[0])
        slab.append(null.score(reference_features(bad, r.landmarks68), ref_f) > limit or damage > damage_limit)
        outline.append(null.score(reference_features(ac.outline(base, r.landmarks68, rng), r.landmarks68),
                                  ref_f) > limit)
    assert sum(legit) <= 1, f"{sum(legit)} of 20 legit R flagged"
    assert sum(outline) >= 14 and sum(slab) >= 14, (sum(outline), sum(slab))


def test_false_rejects_on_fine_mouths_are_few(decisions):
    fine = [rejected for artificial, rejected in decisions if not artificial]
    assert len(fine) == 33
    assert sum(fine) <= 2, f"{sum(fine)} of {len(fine)} fine R mouths rejected by a mouth check"


@pytest.mark.xfail(strict=True, reason="issue 19 target not reached: see benchmarks/RESULTS.md (mouth checks)")
def test_at_least_ninety_percent_of_artificial_mouths_are_rejected(decisions):
    art = [rejected for artificial, rejected in decisions if artificial]
    assert len(art) == 17
    assert np.mean(art) >= 0.9, f"{sum(art)} of {len(art)} artificial R mouths rejected"
