"""qc/mouth_calibration.py and qc/mouth_realism.py on the London set (colour and grey): thresholds fitted on the
run's real mouths flag at most the target share of unseen real mouths, config values override, too few mouths
fall back, the realism check catches drawn artifacts the older checks miss, and the run's damage detector
(qc/mouth_detector.py) catches damage on identities and of kinds it was not fitted on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_config
from qc import artifact_cases as ac
from qc.decide import REASON_MOUTH_DAMAGE, REASON_MOUTH_TINT, Scores, Thresholds, failed_checks
from qc.mouth import GREY_MAX_CHROMA, mouth_scores
from qc.mouth_calibration import calibrate_real_mouths, measure_real_mouths
from qc.mouth_detector import DAMAGE_KINDS, r_inputs
from qc.mouth_realism import FEATURES, mouth_descriptor, mouth_shape
from qc.mouth_reference import reference_features, resample_like_generation

QC = load_config().qc
BASE = Thresholds.from_config(QC)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L").convert("RGB"))


@pytest.fixture(scope="module")
def faces(london_faces):
    return [(f.identity, f.image, f.landmarks68) for by in london_faces.values() for f in by.values()]


@pytest.fixture(scope="module")
def colour(faces):
    return measure_real_mouths(faces)


@pytest.fixture(scope="module")
def grey(faces):
    return measure_real_mouths([(i, _grey(img), lm) for i, img, lm in faces])


@pytest.mark.parametrize("which", ["colour", "grey"])
def test_calibrated_checks_flag_at_most_the_target_of_unseen_real_mouths(which, request):
    m = request.getfixturevalue(which)
    cal = calibrate_real_mouths(m, BASE, QC)
    assert cal.record["source"] == "calibrated" and cal.record["mouths"] == 204
    assert cal.record["chroma"] is (which == "colour")
    oos = cal.record["flag_rate_leave_one_identity_out"]
    assert oos["all"]["any"] <= QC.mouth.calibration_target, oos  # measured: see benchmarks/RESULTS.md
    assert oos["closed"]["mouths"] >= 140 and oos["open"]["mouths"] >= 30
    assert cal.thresholds.mouth_thresholds_source == "calibrated"
    assert cal.thresholds.max_mouth_realism is not None and cal.bank is not None


def test_explicit_config_values_override_the_calibrated_ones(colour):
    qc = load_config(overrides=["qc.mouth.max_seam=21", "qc.mouth.max_realism=7.5"]).qc
    cal = calibrate_real_mouths(colour, Thresholds.from_config(qc), qc)
    assert cal.thresholds.max_mouth_seam == 21 and cal.thresholds.max_mouth_realism == 7.5
    assert cal.thresholds.max_teeth_closed == cal.record["fitted"]["max_teeth_closed"]
    assert cal.record["fitted"]["max_mouth_seam"] != 21


def test_too_few_real_mouths_keep_the_shipped_thresholds_and_no_realism(faces):
    cal = calibrate_real_mouths(measure_real_mouths(faces[:10]), BASE, QC)
    assert cal.record["source"] == "uncalibrated" and cal.bank is None
    assert cal.thresholds.max_mouth_realism is None
    assert (cal.thresholds.max_teeth_closed, cal.thresholds.max_mouth_seam) == (0.12, 15.0)


@pytest.mark.parametrize("which", ["colour", "grey"])
def test_realism_and_damage_checks_catch_drawn_rings_outlines_and_slabs(which, faces, request):
    """Realism alone at its share caught rings >= 0.9 and outlines >= 0.6 while the detector's gate gave it margin
    0.1; with the kind-balanced detector and the lip-line profile the gate gives the detector margin -0.0 on this
    pairing and the other checks' common margin moves out (realism 2.6 -> 3.8), so the property that matters is
    asserted: the run's realism and damage checks together (London: every ring, outline and slab,
    benchmarks/RESULTS.md)."""
    m = request.getfixturevalue(which)
    cal = calibrate_real_mouths(m, BASE, QC)
    assert cal.detector is not None and cal.thresholds.max_mouth_damage is not None
    rng = np.random.default_rng(3)
    conv = _grey if which == "grey" else (lambda x: x)
    caught: dict[str, list[bool]] = {k: [] for k in ("ring", "outline", "slab")}
    by_realism: dict[str, list[bool]] = {k: [] for k in caught}
    for a, b in m.pairs[::3].tolist():
        ident, img, lm = faces[a]
        img = conv(img)
        reference = reference_features(conv(faces[b][1]), faces[b][2])
        for kind in caught:
            bad = conv(ac.DAMAGE[kind][0](img, lm, rng))
            score = m.bank.score(mouth_descriptor(bad, lm, m.bank.use_chroma), mouth_shape(lm), exclude=(ident,))
            damage = float(cal.detector.scores(r_inputs(bad, lm, m.bank, (ident,), reference))[0])
            by_realism[kind].append(score > cal.thresholds.max_mouth_realism)
            caught[kind].append(by_realism[kind][-1] or damage > cal.thresholds.max_mouth_damage)
    rates = {k: float(np.mean(v)) for k, v in caught.items()}
    assert min(rates.values()) >= 0.9, (rates, {k: float(np.mean(v)) for k, v in by_realism.items()})
    assert np.mean(by_realism["ring"]) >= 0.5, by_realism  # realism still carries its share of rings


def test_descriptor_has_one_value_per_feature_and_no_chroma_on_request(faces):
    _, img, lm = faces[0]
    assert mouth_descriptor(img, lm).shape == (len(FEATURES),)
    assert not mouth_descriptor(img, lm, use_chroma=False)[-2:].any()


@pytest.mark.parametrize("which", ["colour", "grey"])
def test_damage_detector_separates_damage_on_unseen_identities_and_unseen_kinds(which, request):
    m = request.getfixturevalue(which)
    s = m.detector_samples
    assert s is not None and len(s.real) == len(m.pairs) and set(s.kinds) == set(DAMAGE_KINDS)
    real, damaged = s.out_of_fold()
    edge = np.quantile(real, 0.98)
    assert np.mean(damaged > edge) >= 0.75, np.mean(damaged > edge)  # London: ~0.85 (benchmarks/RESULTS.md)
    # never seen by the fit, nor by the real scores the edge is set on (London: specks 0.77 / 0.87 colour / grey
    # since the fit weighs every kind the same, 0.80 / 0.83 before; slabs and outlines 1.0; rings by the detector
    # alone are few: the realism and reference checks catch those; every mouth check together catches 98-99 % of
    # unseen specks, benchmarks/RESULTS.md)
    for kind, least in (("specks", 0.7), ("slab", 0.8), ("outline", 0.8)):
        real_k, damaged_k = s.out_of_fold(kind)
        assert np.mean(damaged_k[s.kinds == kind] > np.quantile(real_k, 0.98)) >= least, kind


@pytest.mark.parametrize("which", ["colour", "grey"])
def test_calibrated_checks_catch_specks_the_per_check_split_missed(which, faces, request):
    """On the old per-check split with a tail margin every mouth check together caught 54 / 60 % of specks
    (colour / grey, benchmarks/RESULTS.md); the joint budget with the damage detector catches most of them."""
    m = request.getfixturevalue(which)
    cal = calibrate_real_mouths(m, BASE, QC)
    assert cal.detector is not None and cal.thresholds.max_mouth_damage is not None
    assert cal.record["detector"]["damage_kinds"] == list(DAMAGE_KINDS)
    gate = cal.record["detector_gate"]  # the detector earns its share on London (benchmarks/RESULTS.md)
    assert gate["on"] and gate["recall"] > gate["recall_off"] and gate["damaged"] == len(m.pairs), gate
    rng = np.random.default_rng(5)
    caught = []
    for a, b in m.pairs[::5].tolist():
        ident, img, lm = faces[a]
        conv = _grey if which == "grey" else (lambda x: x)
        bad = conv(ac.specks(resample_like_generation(conv(img), f"t{a}"), lm, rng))
        reference = reference_features(conv(faces[b][1]), faces[b][2])
        r, t = mouth_scores(bad, lm), mouth_scores(conv(img), lm)
        s = Scores(face_found=True, r_mouth_aspect=r.mouth_aspect, t_mouth_aspect=t.mouth_aspect,
                   r_teeth=r.teeth_share, t_teeth=t.teeth_share, r_lip_line=r.lip_line_whiteness,
                   mouth_seam=r.seam_score, mouth_sharpness_ratio=r.sharpness_ratio,
                   mouth_damage=float(cal.detector.scores(r_inputs(bad, lm, m.bank, (ident,), reference))[0]))
        caught.append(REASON_MOUTH_DAMAGE in failed_checks(s, cal.thresholds))
    assert np.mean(caught) >= 0.8, np.mean(caught)


def test_tint_check_is_on_for_a_greyscale_corpus_only_and_flags_no_real_mouth(faces, colour, grey):
    """Colour where the corpus has none: on London in grey the calibrated tint threshold lies beyond every real
    mouth (and at least GREY_MAX_CHROMA), so it flags none of them, and a tinted tooth strip painted on a grey face
    is rejected for it; on London in colour (lips redder than skin by any amount) the check is off."""
    cal_grey, cal_colour = calibrate_real_mouths(grey, BASE, QC), calibrate_real_mouths(colour, BASE, QC)
    limit = cal_grey.thresholds.max_mouth_tint
    assert limit is not None and limit >= GREY_MAX_CHROMA and limit >= grey.tint.max()
    assert cal_grey.record["flag_rate_leave_one_identity_out"]["all"]["mouth_tinted"] == 0.0
    assert cal_colour.thresholds.max_mouth_tint is None and colour.tint.max() > GREY_MAX_CHROMA
    painted = 0
    rng = np.random.default_rng(0)
    for ident, rgb, lm in faces[:20]:
        img = _grey(rgb)
        bad = ac.tinted_strip(img, lm, rng)
        s = Scores(face_found=True, mouth_tint=mouth_scores(bad, lm).tint)
        painted += REASON_MOUTH_TINT in failed_checks(s, cal_grey.thresholds)
        assert REASON_MOUTH_TINT not in failed_checks(Scores(face_found=True, mouth_tint=mouth_scores(img, lm).tint),
                                                      cal_grey.thresholds), ident
    assert painted == 20


def test_tint_check_follows_the_config(grey, colour):
    off = load_config(overrides=["qc.mouth.check_tint=false"]).qc
    assert calibrate_real_mouths(grey, Thresholds.from_config(off), off).thresholds.max_mouth_tint is None
    fixed = load_config(overrides=["qc.mouth.max_tint=30"]).qc
    assert calibrate_real_mouths(colour, Thresholds.from_config(fixed), fixed).thresholds.max_mouth_tint == 30
