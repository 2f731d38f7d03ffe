"""Identity thresholds calibrated from the run's own sources (issue 19, item 4): the same-person threshold that
clusters identities (qc/same_person.py), the gallery margin (qc/identity_margin.py) and the identity self-test
(qc/identity_selftest.py), on the London set's real dlib embeddings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import load_config
from qc.identity_calibration import resolve_identity
from qc.identity_gallery import IdentityGallery
from qc.identity_margin import calibrate_margin, held_out_false_reject, loo_margins, margin_at
from qc.identity_selftest import identity_selftest
from qc.same_person import calibrate_same_person, merged_groups


@pytest.fixture(scope="module")
def london(london_faces) -> tuple[np.ndarray, np.ndarray]:
    """(identities, unit dlib embeddings) of the London set: 102 identities x {neutral, smiling}."""
    ids = [i for i in sorted(london_faces) for _ in ("neutral", "smiling")]
    emb = np.stack([london_faces[i][e].embedding for i in sorted(london_faces) for e in ("neutral", "smiling")])
    emb = emb.astype(np.float64)
    return np.asarray(ids), emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _overlapping(ids: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Each identity's second photo replaced by the next identity's first photo plus noise: one person's two
    photos differ as much as two people's do."""
    rng = np.random.default_rng(0)
    out = emb.copy()
    out[1::2] = np.roll(emb[0::2], -1, axis=0) + rng.normal(0, 0.02, emb[1::2].shape)
    return out


def test_calibration_separates_london_and_merges_no_two_people(london):
    ids, emb = london
    cal = calibrate_same_person(ids, emb)
    assert cal.separable and cal.threshold is not None and not cal.reason
    assert cal.different_bound is not None and cal.different_bound < cal.threshold == cal.same_quantile
    assert cal.different_max is not None and cal.different_max < cal.threshold
    assert merged_groups(ids, emb, cal.threshold) == []
    assert len(merged_groups(ids, emb, cal.different_max)) >= 1  # the rule does merge what reaches the threshold
    assert cal.identities == 102 and cal.different_pairs == 102 * 101 // 2 and cal.same_person_halves == 102
    assert "merged at centroid similarity" in cal.describe()


def test_a_real_duplicate_identity_still_merges(london):
    """One person under two names (each name holds one of the person's photos), the threshold recalibrated on
    that corpus each time: nearly every such alias merges with its person, and nothing else merges."""
    ids, emb = london
    names = sorted(set(ids.tolist()))[:40]
    merged = 0
    for name in names:
        split = ids.astype(object).copy()
        split[np.flatnonzero(ids == name)[1]] = f"{name}-alias"
        split = split.astype(str)
        cal = calibrate_same_person(split, emb)
        groups = merged_groups(split, emb, cal.threshold)
        assert all(g == [name, f"{name}-alias"] for g in groups), groups
        merged += bool(groups)
    assert merged >= 0.9 * len(names), merged
    # the same photos re-encoded under a second name (the slow duplicate test's case) always merge
    alias = np.concatenate([ids, ["001-copy", "001-copy"]])
    copy = np.concatenate([emb, emb[ids == "001"] + 1e-4])
    assert merged_groups(alias, copy, calibrate_same_person(alias, copy).threshold) == [["001", "001-copy"]]


def test_overlapping_populations_merge_nothing_and_say_so(london):
    ids, emb = london
    cal = calibrate_same_person(ids, _overlapping(ids, emb))
    assert not cal.separable and cal.threshold is None and not cal.reason
    assert cal.different_bound is not None and cal.same_quantile is not None
    assert cal.different_bound >= cal.same_quantile
    assert "NOT merged" in cal.describe() and "overlap" in cal.describe()
    # too little to learn from: no same-person pair, or too few identities
    assert calibrate_same_person(["a", "b", "c", "d"], emb[:4]).threshold is None
    assert "two photos" in calibrate_same_person(["a", "b", "c", "d"], emb[:4]).reason
    assert "too few" in calibrate_same_person(["a", "a", "b", "b"], emb[:4]).reason


def test_margin_is_calibrated_leave_one_out_and_the_bound_holds_on_london(london):
    ids, emb = london
    cal = calibrate_margin(ids, emb, 0.01)
    assert cal is not None and cal.photos == 204 and cal.identities == 102
    assert cal.min_margin > 0 and cal.false_reject <= 0.01
    loo = loo_margins(ids, emb)
    m = loo.margin_j()
    # out of sample: each identity judged by the margin calibrated on the other 101
    assert held_out_false_reject(loo.own, m, 0.01) <= 0.01
    # leave-one-out: the photo's own identity centroid is the other photo alone (London has two per identity)
    k = 0
    row = int(loo.rows[k])
    other = emb[row ^ 1]
    assert loo.sim_own[k] == pytest.approx(float(emb[row] @ other))
    # with the photo inside its own centroid (what the QC gallery would give) the margins are higher: optimistic
    full = IdentityGallery.from_embeddings(ids.tolist(), emb)
    j, i = ids[row], ids[row + 2]
    assert full.margins(emb[row], i, j).margin_j > m[k]
    # the conformal rule: k = floor(0.01 * (n + 1)); too few identities to certify 1 %: the most lenient margin 0
    assert margin_at(np.arange(98.0), 0.01) == (0.0, float("-inf"))
    assert margin_at(np.arange(99.0), 0.01) == (0.0, 0.0)
    assert margin_at(np.arange(1.0, 201.0), 0.01) == (2.0, 2.0)


def test_explicit_values_override_the_calibration(london):
    ids, emb = london
    sources = pa.table({"identity": ids.tolist(), "embedding": emb.astype(np.float32).tolist()})
    qc = load_config().qc
    auto = resolve_identity(qc, sources)
    assert auto.thresholds.identity_thresholds_source == "calibrated"
    assert auto.margin is not None and auto.thresholds.min_identity_margin == auto.margin.min_margin
    fixed = qc.model_copy(update={"identity": qc.identity.model_copy(update={"min_margin": 0.07})})
    manual = resolve_identity(fixed, sources)
    assert manual.margin is None and manual.thresholds.min_identity_margin == 0.07
    assert manual.thresholds.identity_thresholds_source == "leak:calibrated,swap:calibrated,margin:config"
    assert manual.thresholds.max_leak_similarity == auto.thresholds.max_leak_similarity


def test_identity_selftest_counts_false_rejects_and_merges(london):
    ids, emb = london
    sources = pa.table({"identity": ids.tolist(), "embedding": emb.astype(np.float32).tolist()})
    thresholds = resolve_identity(load_config().qc, sources).thresholds
    cal = calibrate_same_person(ids, emb)
    report = identity_selftest(ids, emb, thresholds, cal.threshold, max_false_reject=0.01)
    assert report["photos"] == 204 and report["merged_groups"] == 0 and report["identities_merged"] == 0
    assert report["margin_false_reject_rate"] <= 0.01 and report["held_out_margin_false_reject_rate"] <= 0.01
    assert report["identity_false_reject_rate"] <= 0.02
    # the same real photos against a strict margin, and a threshold that merges look-alikes: both are reported
    strict = identity_selftest(ids, emb, replace(thresholds, min_identity_margin=0.2), 0.9)
    assert strict["margin_false_reject_rate"] > 0.5 and strict["identity_false_reject_rate"] > 0.5
    by_reason = strict["false_reject_by_reason"]
    # every photo under the margin fails as a leak (margin over i) or as ambiguous (over another identity)
    assert by_reason["identity_leak"] + by_reason["identity_ambiguous"] >= strict["margin_false_reject_rate"] - 1e-9
    assert strict["merged_groups"] >= 1 and strict["identities_merged"] >= 2
    assert strict["held_out_margin_false_reject_rate"] is None
