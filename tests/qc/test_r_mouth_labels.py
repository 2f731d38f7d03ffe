"""Generated R mouths from London rounds, labelled by eye, and the share the mouth checks reject
(issue 19: >= 90 % of the visibly artificial ones, <= 2 % of real mouths flagged). Three fixtures
(tests/qc/r_mouth_fixture.py has their layout): tests/fixtures/r_mouths (landmark_warp_v2, 17 artificial / 33
fine), tests/fixtures/r_mouths_v3 (landmark_warp_v3, the closing fill; 18 / 32) and tests/fixtures/r_mouths_v4
(landmark_warp_v4: mouth donors, the smooth mouth render, painted mouths refused; 11 / 39, labelled blind mixed with
the v3 R by a labeller who called 34 of those 50 artificial), each R with the real photo its mouth came from and its
eye band. Every mouth check a round applies that R and its carrier decide (ghost teeth, seam, blur, realism,
reference, the damage detector), with thresholds calibrated on the London set's real mouths as a London run
calibrates them. Where the 90 % target is not reached the test is a strict xfail (it fails the day it is reached,
to be made a plain test); benchmarks/RESULTS.md has the figures. The reference check's own behaviour on London's
real mouths (legit R pass, damaged R fail) is tested here too, on the same calibration.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from qc import artifact_cases as ac
from qc.mouth_calibration import MouthCalibration
from qc.mouth_detector import r_inputs
from qc.mouth_reference import reference_features, resample_like_generation
from tests.conftest import LONDON
from tests.qc.r_mouth_fixture import LabelledR, load, london_calibration, mouth_reasons, scores

QC = load_config().qc
# fixture -> (artificial, fine) labels
FIXTURES = {"r_mouths": (17, 33), "r_mouths_v3": (18, 32), "r_mouths_v4": (11, 39)}
NOT_MET = "issue 19 target not reached on this fixture: see benchmarks/RESULTS.md (mouth checks on generated R)"
TARGET_MET: dict[str, bool] = {"r_mouths": False, "r_mouths_v3": False, "r_mouths_v4": False}
# the damage detector (and once the blur check) rejects 4 of the 32 fine v3 R: more than the limit (RESULTS.md)
FINE_LIMIT_MET: dict[str, bool] = {"r_mouths": True, "r_mouths_v3": False, "r_mouths_v4": True}
FINE_NOT_MET = "more fine generated R rejected than the limit: see benchmarks/RESULTS.md (mouth checks on generated R)"


def _expected(met: dict[str, bool], reason: str) -> list:
    """Each fixture, a strict xfail where `met` says its target is not reached (it fails the day it is)."""
    return [n if met[n] else pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=reason)) for n in sorted(met)]


@pytest.fixture(scope="module")
def calibration(london_faces) -> MouthCalibration:
    """The mouth calibration a London run makes on its real mouths (reference check and damage detector)."""
    cal = london_calibration(london_faces, LONDON, QC)
    assert cal.detector is not None and cal.thresholds.max_mouth_damage is not None
    return cal


@pytest.fixture(scope="module")
def labelled() -> dict[str, list[LabelledR]]:
    return {name: load(name) for name in FIXTURES}


@pytest.fixture(scope="module")
def decisions(calibration, labelled) -> dict[str, list[tuple[bool, bool]]]:
    """fixture -> (labelled artificial, rejected by a mouth check) per labelled R."""
    return {name: [(r.artificial, bool(mouth_reasons(scores(r, calibration), calibration.thresholds)))
                   for r in rs] for name, rs in labelled.items()}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_is_fifty_labelled_london_mouths_with_their_references(labelled, name):
    rs = labelled[name]
    assert len(rs) == 50 and sum(r.artificial for r in rs) == FIXTURES[name][0]
    assert {r.entry["label"] for r in rs} == {"artificial", "fine"}
    assert len({r.entry["candidate_id"] for r in rs}) == 50
    assert all(r.carrier.shape == (112, 160, 3) for r in rs)
    # R's landmarks lie on R's own pixels: the mouth in the lower-face crop, the eyes in the eye band
    assert all(r.face[int(y), int(x)].any() for r in rs for x, y in r.landmarks[36:68])
    # the reference is a different photo (the carrier or the mouth donor), not R's own crop
    assert all(np.abs(r.carrier.astype(int) - r.face[_box(r)]).mean() > 1 for r in rs)


def _box(r: LabelledR) -> tuple[slice, slice]:
    x0, y0 = np.round(r.landmarks[48:68].mean(0)).astype(int) - (80, 48)
    return slice(y0, y0 + 112), slice(x0, x0 + 160)


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


@pytest.mark.parametrize("name", _expected(FINE_LIMIT_MET, FINE_NOT_MET))
def test_false_rejects_on_fine_mouths_are_few(decisions, name):
    fine = [rejected for artificial, rejected in decisions[name] if not artificial]
    assert len(fine) == FIXTURES[name][1]
    assert sum(fine) <= 2, f"{sum(fine)} of {len(fine)} fine R mouths rejected by a mouth check"


@pytest.mark.parametrize("name", _expected(TARGET_MET, NOT_MET))
def test_at_least_ninety_percent_of_artificial_mouths_are_rejected(decisions, name):
    art = [rejected for artificial, rejected in decisions[name] if artificial]
    assert len(art) == FIXTURES[name][0]
    assert np.mean(art) >= 0.9, f"{sum(art)} of {len(art)} artificial R mouths rejected"
