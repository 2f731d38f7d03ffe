"""Mouth checks for any photo (issue 19, item 3): per-run calibrated thresholds sharing one budget, the realism
check, the check of R against its own reference and the per-run damage detector, per set.

    python -m benchmarks.bench_mouth_checks [--london DIR] [--corpus DIR ...] [--write-results]

Sets: London in colour, London in greyscale (PIL convert("L")), and every --corpus folder (bench_mouth_grey's
loader: JAFFE-style names or identity/expression files). For each set, qc/mouth_calibration.py calibrates the
mouth thresholds on the set's real mouths (as a run does on its sources) and reports the real mouths flagged,
out of sample (each identity judged with thresholds fitted on the others, its realism against the others'
mouths), per expression class and open/closed. Damage cases (qc/artifact_cases.py: ghost teeth, seam, blur and
the artifacts seen on generated R) are built on a legit R: every face of the set that has another photo of its
identity, resampled as the generator resamples (qc/mouth_reference.py), its reference the other photo (as the
carrier is a generated R's); on grey sets the damaged face is turned grey. T = the untouched face. Each case is
judged through qc/decide.py with thresholds (and the reference check's null) fitted without the base face's
identity and the damage detector (qc/mouth_detector.py) fitted without its identity fold; recall per kind, and per
kind with that kind also left out of the detector's fit (and of the real scores its threshold is set on). Only
aggregate figures are printed: nothing per image (research-terms corpora).
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import replace

import cv2
import numpy as np

from benchmarks.bench_mouth_grey import grey, load_corpus
from benchmarks.common import RESULTS, labelled_sets_parser, machine, print_section
from pipeline.config import load_config
from qc import artifact_cases as ac
from qc.config import QCConfig
from qc.decide import (
    REASON_GHOST_TEETH,
    REASON_MOUTH_BLUR,
    REASON_MOUTH_DAMAGE,
    REASON_MOUTH_REFERENCE,
    REASON_MOUTH_SEAM,
    REASON_MOUTH_STATE,
    REASON_MOUTH_TINT,
    REASON_MOUTH_UNREAL,
    Scores,
    Thresholds,
    failed_checks,
)
from qc.mouth import mouth_scores
from qc.mouth_calibration import (
    RealMouths,
    apply_overrides,
    calibrate_real_mouths,
    detector_gate,
    fit_thresholds,
    flags,
    measure_real_mouths,
    out_of_sample_flags,
    reference_null,
    reference_scores,
)
from qc.mouth_detector import (
    DAMAGE_KINDS,
    REFERENCE_INPUTS,
    DetectorSamples,
    MouthDetector,
    identity_fold,
    r_inputs,
)
from qc.mouth_realism import mouth_descriptor, mouth_shape
from qc.mouth_reference import ReferenceNull, reference_features, resample_like_generation

HEADING = "## Mouth checks: colour where the corpus has none (issue 19, item 3)"
MOUTH = {REASON_GHOST_TEETH, REASON_MOUTH_STATE, REASON_MOUTH_SEAM, REASON_MOUTH_BLUR, REASON_MOUTH_UNREAL,
         REASON_MOUTH_REFERENCE, REASON_MOUTH_DAMAGE, REASON_MOUTH_TINT}
KINDS = ("ghost_teeth", "seam", "blur", *ac.DAMAGE)


def damage_cases(data: dict[str, list], m: RealMouths, seed: int = 0):
    """(kind, damaged image, base index, legit R) for every legit R of the set (a face with a reference,
    resampled) and every kind that fits it."""
    rng = np.random.default_rng(seed)
    ids = np.array(data["id"])
    open_ = np.flatnonzero(m.aspect >= 0.12)
    donors = open_[m.teeth[open_] > 0.05] if len(open_) else open_
    for b in m.pairs[:, 0].tolist():
        img, lm = resample_like_generation(data["img"][b], data["key"][b]), data["lm"][b]
        others = np.flatnonzero(ids != ids[b])
        if m.aspect[b] < 0.06 and len(donors):
            d = int(donors[rng.integers(len(donors))])
            yield ("ghost_teeth", ac.ghost_teeth(img, lm, data["img"][d], data["lm"][d],
                                                 float(rng.uniform(0.4, 0.7))), b, img)
        yield "seam", ac.seam(img, lm, data["img"][int(others[rng.integers(len(others))])],
                              gain=float(rng.uniform(0.85, 1.15))), b, img
        yield "blur", ac.blur(img, lm, float(rng.uniform(0.025, 0.05))), b, img
        for kind, (build, needs_open) in ac.DAMAGE.items():
            if needs_open and m.aspect[b] < 0.12:
                continue
            yield kind, build(img, lm, rng), b, img


VISIBILITY_BINS = (8.0, 24.0)  # grey levels: faint < 8 <= moderate < 24 <= plain


def _grey_levels(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def visible_change(legit: np.ndarray, damaged: np.ndarray, landmarks68: np.ndarray) -> float:
    """How visible the painted artifact is: the largest change of grey level (0-255), averaged over 3x3 pixels,
    within the mouth (the outer lips' hull grown by a quarter of the mouth width). Describes the case, decides
    nothing: a dark speck on dark lips changes a few levels, a white slab ~150."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    change = cv2.blur(np.abs(_grey_levels(damaged) - _grey_levels(legit)), (3, 3))
    mask = np.zeros(change.shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(lm[48:60]).astype(np.int32)), 1)
    width = max(float(np.hypot(*(lm[54] - lm[48]))), 4.0)
    mask = cv2.dilate(mask, np.ones((int(width / 4) | 1,) * 2, np.uint8))
    return float(change[mask > 0].max()) if mask.any() else 0.0


def visibility_bin(change: float) -> str:
    return "faint" if change < VISIBILITY_BINS[0] else "moderate" if change < VISIBILITY_BINS[1] else "plain"


def judge(img: np.ndarray, lm: np.ndarray, base_img: np.ndarray, m: RealMouths, ident: str,
          null: ReferenceNull, reference: np.ndarray) -> tuple[Scores, np.ndarray]:
    """R = img's mouth scores against T = base_img (realism against other identities, the reference check against
    its reference's features), less the damage score, and its raw damage-detector inputs."""
    r, tt = mouth_scores(img, lm), mouth_scores(base_img, lm)
    realism = m.bank.score(mouth_descriptor(img, lm, m.bank.use_chroma), mouth_shape(lm), exclude=(ident,))
    x = r_inputs(img, lm, m.bank, (ident,), reference)  # its reference columns: R's features minus the reference's
    s = Scores(face_found=True, r_mouth_aspect=r.mouth_aspect, t_mouth_aspect=tt.mouth_aspect, r_teeth=r.teeth_share,
               t_teeth=tt.teeth_share, r_lip_line=r.lip_line_whiteness, mouth_seam=r.seam_score,
               mouth_sharpness_ratio=r.sharpness_ratio, mouth_realism=realism,
               mouth_reference_diff=float(null.scores(x[REFERENCE_INPUTS])[0]), mouth_tint=r.tint)
    return s, x


def _reasons(s: Scores, x: np.ndarray, detector: MouthDetector, t: Thresholds) -> set[str]:
    """The mouth reasons qc/decide.py gives with the damage score of `detector`."""
    return set(failed_checks(replace(s, mouth_damage=float(detector.scores(x)[0])), t)) & MOUTH


def _thresholds_by_identity(m: RealMouths, base: Thresholds, qc: QCConfig) -> dict[str, Thresholds]:
    ids = m.identities
    return {i: apply_overrides(base, fit_thresholds(m, ids != i, qc.mouth.calibration_target,
                                                    base.mouth_closed_aspect), qc) for i in np.unique(ids)}


def evaluated_set(data: dict[str, list], as_grey: bool) -> dict[str, list]:
    """The set as `evaluate` judges it: greyed when asked, each photo keyed identity/expression/index (the key
    drives the resampling and the reference pairs, so the damage cases follow from it)."""
    keys = [f"{i}/{e}/{k}" for k, (i, e) in enumerate(zip(data["id"], data["ex"], strict=True))]
    return {**data, "img": [grey(x) if as_grey else x for x in data["img"]], "key": keys}


def evaluate(data: dict[str, list], qc: QCConfig, as_grey: bool) -> dict:
    """Calibration record, real flag rates per class (out of sample) and damage recall per kind: with the detector
    fitted without the base identity's fold (LOIO), and with it fitted also without the case's kind (LOKO)."""
    data = evaluated_set(data, as_grey)
    keys = data["key"]
    faces = list(zip(data["id"], data["img"], data["lm"], strict=True))
    t0 = time.perf_counter()
    m = measure_real_mouths(faces, keys)
    t1 = time.perf_counter()
    base = Thresholds.from_config(qc)
    cal = calibrate_real_mouths(m, base, qc)
    cost = (t1 - t0, time.perf_counter() - t1)
    oos = out_of_sample_flags(m, base, qc)
    anyf = np.any(list(oos.values()), axis=0)
    ex = np.array(data["ex"])
    per_class = {c: (int((ex == c).sum()), float(anyf[ex == c].mean())) for c in sorted(set(ex))}
    ids = m.identities
    samples = m.detector_samples
    assert samples is not None
    by_id = _thresholds_by_identity(m, base, qc)
    nulls = {i: reference_null(m, str(i)) for i in np.unique(ids)}
    folds = sorted({identity_fold(i) for i in ids})
    fold_rows = samples.folds()
    detectors = {f: samples.fit(fold_rows != f) for f in folds}
    ref_of = dict(m.pairs.tolist())
    ref_feats = {b: reference_features(data["img"][b], data["lm"][b]) for b in set(ref_of.values())}
    cases: dict[str, list[tuple[Scores, np.ndarray, str, int]]] = {k: [] for k in KINDS}
    visibility: dict[str, list[str]] = {k: [] for k in KINDS}
    for kind, img, b, legit in damage_cases(data, m):
        img = grey(img) if as_grey else img
        s, x = judge(img, data["lm"][b], data["img"][b], m, ids[b], nulls[ids[b]], ref_feats[ref_of[b]])
        cases[kind].append((s, x, str(ids[b]), b))
        visibility[kind].append(visibility_bin(visible_change(grey(legit) if as_grey else legit, img, data["lm"][b])))
    hits: dict[str, list[bool]] = {k: [] for k in KINDS}
    by_ref: dict[str, list[bool]] = {k: [] for k in KINDS}
    by_detector: dict[str, list[bool]] = {k: [] for k in KINDS}
    unseen: dict[str, list[bool]] = {k: [] for k in KINDS}
    for kind, rows in cases.items():
        for s, x, ident, _ in rows:
            got = _reasons(s, x, detectors[identity_fold(ident)], by_id[ident])
            hits[kind].append(bool(got))
            by_ref[kind].append(REASON_MOUTH_REFERENCE in got)
            by_detector[kind].append(REASON_MOUTH_DAMAGE in got)
        if not rows or kind not in DAMAGE_KINDS:
            continue
        # leave the kind out: the detector and its real out-of-fold scores (so the thresholds) fitted without it
        m_k = replace(m, _cache={**m._cache, "detector": _without_kind_scores(m, samples, kind)})
        by_id_k = _thresholds_by_identity(m_k, base, qc)
        det_k = {f: samples.fit(fold_rows != f, kind) for f in folds}
        unseen[kind] = [bool(_reasons(s, x, det_k[identity_fold(i)], by_id_k[i])) for s, x, i, _ in rows]
    old = flags(m, base)  # the shipped fixed thresholds, no realism check
    seen_real, seen_hits = seen_identities(m, keys, cases, base, qc)
    return dict(cal=cal, oos=oos, per_class=per_class, hits=hits, by_ref=by_ref, by_detector=by_detector,
                unseen=unseen, visibility=visibility, seen_real=seen_real, seen_hits=seen_hits,
                old_any=float(np.any(list(old.values()), axis=0).mean()), cost=cost)


PHOTO_FOLDS = 10


def photo_folds(keys: list[str]) -> np.ndarray:
    """Each photo's fold among PHOTO_FOLDS folds of single photos (by the hash of its key): an identity's photos
    fall in several folds."""
    return np.array([int(hashlib.sha256(f"photo\0{k}".encode()).hexdigest()[:8], 16) % PHOTO_FOLDS for k in keys])


def seen_identities(m: RealMouths, keys: list[str], cases: dict[str, list[tuple[Scores, np.ndarray, str, int]]],
                    base: Thresholds, qc: QCConfig) -> tuple[np.ndarray, dict[str, list[bool]]]:
    """Real mouths flagged and damage cases caught when R's identity is in the calibration sample (what a run on a
    corpus of at most qc.mouth.calibration_sample photos does: every j is sampled), its photo not: each fold of
    photos judged with thresholds, the reference null and the detector fitted on the other photos, the identity's
    other photos included. Realism still compares with other identities only, as a round does."""
    pf = photo_folds(keys)
    pair_fold = pf[m.pairs[:, 0]]
    gate = detector_gate(m, qc.mouth.calibration_target, base.mouth_closed_aspect)
    samples = m.detector_samples
    assert samples is not None
    real_flagged = np.zeros(len(m.aspect), bool)
    hits: dict[str, list[bool]] = {k: [] for k in KINDS}
    for f in range(PHOTO_FOLDS):
        mine = pf == f
        null = ReferenceNull.fit(m.reference_diffs[pair_fold != f])
        held = replace(m, _cache={"realism": m.realism, "reference": reference_scores(m, null),
                                  "detector": m.detector})
        t = apply_overrides(base, fit_thresholds(held, ~mine, qc.mouth.calibration_target,
                                                 base.mouth_closed_aspect, gate), qc)
        detector = samples.fit(pair_fold != f)
        scores = np.full(len(m.aspect), np.nan)
        scores[m.pairs[:, 0]] = detector.scores(samples.real)
        judged = replace(held, _cache={**held._cache, "detector": scores})
        real_flagged |= mine & np.any(list(flags(judged, t).values()), axis=0)
        for kind, rows in cases.items():
            hits[kind] += [bool(_reasons(replace(s, mouth_reference_diff=float(null.scores(x[REFERENCE_INPUTS])[0])), x,
                                         detector, t)) for s, x, _, b in rows if pf[b] == f]
    return real_flagged, hits


def _without_kind_scores(m: RealMouths, samples: DetectorSamples, kind: str) -> np.ndarray:
    out = np.full(len(m.aspect), np.nan)
    out[m.pairs[:, 0]] = samples.out_of_fold(kind)[0]
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(values: list[bool], n: bool = False) -> str:
    return (_pct(float(np.mean(values))) + (f" n={len(values)}" if n else "")) if values else "-"


def section(results: dict[str, dict], command: str) -> str:
    checks = ("ghost_teeth", "mouth_seam", "mouth_blur", "mouth_unrealistic", "mouth_differs_from_reference",
              "mouth_damaged", "mouth_tinted")
    lines = [HEADING, "", f"Machine: {machine()}. Command: `{command}`.", "",
             "Thresholds calibrated on each set's own real mouths (qc/mouth_calibration.py): every mouth check shares "
             "the 2 % target (qc/mouth_budget.py: each check's tail quantile at its share, moved out by the smallest "
             "margin at which the real mouths flagged by any check, cross-validated over identity folds, have "
             "(c + 1) / (n + 1) <= 2 %; no fixed tail margin), and the damage detector (qc/mouth_detector.py) is "
             "fitted on the set's legit R against synthetic artifacts painted on them. *Real flagged* is out of "
             "sample: each identity judged with thresholds fitted on the other identities (realism against the "
             "other identities' mouths, the reference null without the identity, the detector's scores from fits "
             "without the identity's fold); on a greyscale set the tint check (qc/mouth.py mouth_tint) is on, "
             "outside the budget, beyond every real mouth. *Shipped* = the fixed thresholds (no realism, reference, "
             "damage or tint check), same photos. *Identity seen*: each photo judged with thresholds fitted on the "
             "other folds of photos, its identity's other photos included (`seen_identities`).", "",
             "| set | photos | real flagged, all (shipped → calibrated) | closed | open | per class | "
             "ghost / seam / blur / unrealistic / reference / damaged / tinted | real flagged, identity seen |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rec = r["cal"].record["flag_rate_leave_one_identity_out"]
        classes = ", ".join(f"{c} {_pct(v)} ({n})" for c, (n, v) in r["per_class"].items())
        lines.append(f"| {name} | {rec['all']['mouths']} | {_pct(r['old_any'])} → {_pct(rec['all']['any'])} | "
                     f"{_pct(rec['closed']['any'])} ({rec['closed']['mouths']}) | {_pct(rec['open']['any'])} "
                     f"({rec['open']['mouths']}) | {classes} | " + " / ".join(_pct(rec["all"][c]) for c in checks)
                     + f" | {_pct(float(r['seen_real'].mean()))} |")
    lines += ["", "Damage cases on legit R (a real photo resampled as the generator resamples, its reference another "
              "photo of the identity), T = the untouched photo: share rejected by any mouth check, with the detector "
              "fitted without the base identity's fold (LOIO); cases per kind. Rows *detector* = by the damage check "
              "alone (LOIO); *kind left out* = rejected by any mouth check when the detector, and the real scores "
              "its threshold is set on, were fitted without that kind of damage (LOKO: an artifact it never saw). "
              "Rows *any check, faint / moderate / plain* = the *any check* row split by how visible the painted "
              f"artifact is (largest change of grey level in the mouth, 3x3 mean: < {VISIBILITY_BINS[0]:g}, "
              f"< {VISIBILITY_BINS[1]:g}, more; `visible_change`). Row *any check, identity seen* = each photo "
              "judged with every threshold, the reference null and the detector fitted without its fold of photos "
              f"({PHOTO_FOLDS} folds of single photos), its identity's other photos included: what a run does when "
              "R's identity j is in the calibration sample (every j of a corpus up to qc.mouth.calibration_sample "
              "photos); the rows above leave j out (identities outside the sample: most j of a large corpus).",
              "", "| set | row | all | " + " | ".join(KINDS) + " |", "|---|---|---|" + "---|" * len(KINDS)]
    for name, r in results.items():
        allv = [x for v in r["hits"].values() for x in v]
        lines.append(f"| {name} | any check | {_pct(float(np.mean(allv)))} of {len(allv)} | "
                     + " | ".join(_cell(r["hits"][k], True) for k in KINDS) + " |")
        for row, key in (("reference", "by_ref"), ("detector", "by_detector"), ("kind left out", "unseen")):
            v = [x for k in KINDS for x in r[key][k]]
            lines.append(f"| {name} | {row} | {_cell(v)} | " + " | ".join(_cell(r[key][k]) for k in KINDS) + " |")
        seen = [x for v in r["seen_hits"].values() for x in v]
        lines.append(f"| {name} | any check, identity seen | {_pct(float(np.mean(seen)))} of {len(seen)} | "
                     + " | ".join(_cell(r["seen_hits"][k], True) for k in KINDS) + " |")
        for level in ("faint", "moderate", "plain"):
            by_kind = {k: [h for h, b in zip(r["hits"][k], r["visibility"][k], strict=True) if b == level]
                       for k in KINDS}
            v = [x for k in KINDS for x in by_kind[k]]
            lines.append(f"| {name} | any check, {level} | {_cell(v)} of {len(v)} | "
                         + " | ".join(_cell(by_kind[k], True) for k in KINDS) + " |")
    lines += ["", "Damage detector's part of the budget (qc/mouth_budget.py check_share, run.json "
              "mouth_calibration.detector_gate): off or its own margin, whichever catches the most of the set's own "
              "synthetic damaged R; recall of those by all checks at the choice / with one common margin (before) / "
              "without the detector, cross-validated over identity folds at the same budget.", ""]
    for name, r in results.items():
        g = r["cal"].record["detector_gate"]
        lines.append(f"- {name}: {'margin ' + str(g['margin']) if g['on'] else 'off'} (recall {_pct(g['recall'])} / "
                     f"common margin {_pct(g['recall_common'])} / off {_pct(g['recall_off'])} of {g['damaged']} "
                     "synthetic damaged R)")
    lines += ["", "Per-run cost of the calibration (measuring the sampled mouths and their damaged copies / fitting "
              "the thresholds, detector gate and detector, with the out-of-sample flag rates), seconds:", ""]
    for name, r in results.items():
        lines.append(f"- {name}: {r['cost'][0]:.1f} measure + {r['cost'][1]:.1f} fit")
    lines += ["", "Thresholds fitted on all of each set's mouths (what a run on that set applies):", ""]
    for name, r in results.items():
        fitted = r["cal"].record["applied"]
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in fitted.items() if v is not None))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = labelled_sets_parser(__doc__)
    args = ap.parse_args(argv)
    qc = load_config().qc
    london = load_corpus(args.london)
    sets = {"London colour": (london, False), "London grey": (london, True)}
    for c in args.corpus:
        sets[c.name] = (load_corpus(c), False)
    results = {name: evaluate(data, qc, g) for name, (data, g) in sets.items()}
    command = "python -m benchmarks.bench_mouth_checks " + " ".join(
        f"--corpus {c}" for c in args.corpus) + (" --write-results" if args.write_results else "")
    text = section(results, command.strip())
    print_section(text, HEADING, str(RESULTS) if args.write_results else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
