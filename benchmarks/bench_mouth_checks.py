"""Mouth checks for any photo (issue 19, item 3): per-run calibrated thresholds, the realism check and the check of
R against its own reference, per set.

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
identity; recall per kind. Only aggregate figures are printed: nothing per image (research-terms corpora).
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.bench_mouth_grey import grey, load_corpus
from benchmarks.common import RESULTS, labelled_sets_parser, machine, print_section
from pipeline.config import load_config
from qc import artifact_cases as ac
from qc.config import QCConfig
from qc.decide import (
    REASON_GHOST_TEETH,
    REASON_MOUTH_BLUR,
    REASON_MOUTH_REFERENCE,
    REASON_MOUTH_SEAM,
    REASON_MOUTH_STATE,
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
    fit_thresholds,
    flags,
    measure_real_mouths,
    out_of_sample_flags,
    reference_null,
)
from qc.mouth_realism import mouth_descriptor, mouth_shape
from qc.mouth_reference import ReferenceNull, reference_features, resample_like_generation

HEADING = "## Mouth checks against each R's own reference (issue 19, item 3, helper mouth2)"
MOUTH = {REASON_GHOST_TEETH, REASON_MOUTH_STATE, REASON_MOUTH_SEAM, REASON_MOUTH_BLUR, REASON_MOUTH_UNREAL,
         REASON_MOUTH_REFERENCE}
KINDS = ("ghost_teeth", "seam", "blur", *ac.DAMAGE)


def damage_cases(data: dict[str, list], m: RealMouths, seed: int = 0):
    """(kind, damaged image, base index) for every legit R of the set (a face with a reference, resampled) and
    every kind that fits it."""
    rng = np.random.default_rng(seed)
    ids = np.array(data["id"])
    open_ = np.flatnonzero(m.aspect >= 0.12)
    donors = open_[m.teeth[open_] > 0.05] if len(open_) else open_
    for b in m.pairs[:, 0].tolist():
        img, lm = resample_like_generation(data["img"][b], data["key"][b]), data["lm"][b]
        others = np.flatnonzero(ids != ids[b])
        if m.aspect[b] < 0.06 and len(donors):
            d = int(donors[rng.integers(len(donors))])
            yield "ghost_teeth", ac.ghost_teeth(img, lm, data["img"][d], data["lm"][d], float(rng.uniform(0.4, 0.7))), b
        yield "seam", ac.seam(img, lm, data["img"][int(others[rng.integers(len(others))])],
                              gain=float(rng.uniform(0.85, 1.15))), b
        yield "blur", ac.blur(img, lm, float(rng.uniform(0.025, 0.05))), b
        for kind, (build, needs_open) in ac.DAMAGE.items():
            if needs_open and m.aspect[b] < 0.12:
                continue
            yield kind, build(img, lm, rng), b


def judge(img: np.ndarray, lm: np.ndarray, base_img: np.ndarray, m: RealMouths, ident: str,
          t: Thresholds, null: ReferenceNull, reference: np.ndarray) -> set[str]:
    """The mouth reasons qc/decide.py gives R = img against T = base_img (realism against other identities) and
    against its reference's features."""
    r, tt = mouth_scores(img, lm), mouth_scores(base_img, lm)
    realism = m.bank.score(mouth_descriptor(img, lm, m.bank.use_chroma), mouth_shape(lm), exclude=(ident,))
    s = Scores(face_found=True, r_mouth_aspect=r.mouth_aspect, t_mouth_aspect=tt.mouth_aspect, r_teeth=r.teeth_share,
               t_teeth=tt.teeth_share, r_lip_line=r.lip_line_whiteness, mouth_seam=r.seam_score,
               mouth_sharpness_ratio=r.sharpness_ratio, mouth_realism=realism,
               mouth_reference_diff=null.score(reference_features(img, lm), reference))
    return set(failed_checks(s, t)) & MOUTH


def evaluate(data: dict[str, list], qc: QCConfig, as_grey: bool) -> dict:
    """Calibration record, real flag rates per class (out of sample) and damage recall per kind."""
    faces = [(i, grey(x) if as_grey else x, lm) for i, x, lm in zip(data["id"], data["img"], data["lm"], strict=True)]
    keys = [f"{i}/{e}/{k}" for k, (i, e) in enumerate(zip(data["id"], data["ex"], strict=True))]
    data = {**data, "img": [f[1] for f in faces], "key": keys}
    m = measure_real_mouths(faces, keys)
    base = Thresholds.from_config(qc)
    cal = calibrate_real_mouths(m, base, qc)
    oos = out_of_sample_flags(m, base, qc)
    anyf = np.any(list(oos.values()), axis=0)
    ex = np.array(data["ex"])
    per_class = {c: (int((ex == c).sum()), float(anyf[ex == c].mean())) for c in sorted(set(ex))}
    ids = np.array(data["id"])
    by_id = {i: apply_overrides(base, fit_thresholds(m, ids != i, qc.mouth.calibration_target,
                                                     base.mouth_closed_aspect), qc) for i in np.unique(ids)}
    nulls = {i: reference_null(m, str(i)) for i in np.unique(ids)}
    ref_of = dict(m.pairs.tolist())
    ref_feats = {b: reference_features(data["img"][b], data["lm"][b]) for b in set(ref_of.values())}
    hits: dict[str, list[bool]] = {k: [] for k in KINDS}
    by_ref: dict[str, list[bool]] = {k: [] for k in KINDS}
    for kind, img, b in damage_cases(data, m):
        img = grey(img) if as_grey else img
        got = judge(img, data["lm"][b], data["img"][b], m, ids[b], by_id[ids[b]], nulls[ids[b]], ref_feats[ref_of[b]])
        hits[kind].append(bool(got))
        by_ref[kind].append(REASON_MOUTH_REFERENCE in got)
    old = flags(m, base)  # the shipped fixed thresholds, no realism check
    return dict(cal=cal, oos=oos, per_class=per_class, hits=hits, by_ref=by_ref,
                old_any=float(np.any(list(old.values()), axis=0).mean()))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def section(results: dict[str, dict], command: str) -> str:
    checks = ("ghost_teeth", "mouth_seam", "mouth_blur", "mouth_unrealistic", "mouth_differs_from_reference")
    lines = [HEADING, "", f"Machine: {machine()}. Command: `{command}`.", "",
             "Thresholds calibrated on each set's own real mouths (qc/mouth_calibration.py, target 2 % of real mouths "
             "flagged by all mouth checks together; the reference check, qc/mouth_reference.py, takes a quarter of "
             "it, the realism check a quarter). *Real flagged* is out of sample: each identity judged with thresholds "
             "and the reference check's null fitted on the other identities, its realism measured against the other "
             "identities' mouths; for the reference check each real photo is a legit R (resampled as the generator "
             "resamples) against another photo of its identity. *Shipped* = the fixed thresholds (no realism, no "
             "reference check), same photos.", "",
             "| set | photos | real flagged, all (shipped → calibrated) | closed | open | per class | "
             "ghost / seam / blur / unrealistic / reference |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rec = r["cal"].record["flag_rate_leave_one_identity_out"]
        classes = ", ".join(f"{c} {_pct(v)} ({n})" for c, (n, v) in r["per_class"].items())
        lines.append(f"| {name} | {rec['all']['mouths']} | {_pct(r['old_any'])} → {_pct(rec['all']['any'])} | "
                     f"{_pct(rec['closed']['any'])} ({rec['closed']['mouths']}) | {_pct(rec['open']['any'])} "
                     f"({rec['open']['mouths']}) | {classes} | " + " / ".join(_pct(rec["all"][c]) for c in checks)
                     + " |")
    lines += ["", "Damage cases on legit R (a real photo resampled as the generator resamples, its reference another "
              "photo of the identity), T = the untouched photo: share rejected by any mouth check (by the reference "
              "check alone in brackets); cases per kind.", "",
              "| set | all | " + " | ".join(KINDS) + " |", "|---|---|" + "---|" * len(KINDS)]
    for name, r in results.items():
        allv = [x for v in r["hits"].values() for x in v]
        cells = [f"{_pct(np.mean(r['hits'][k]))} ({_pct(np.mean(r['by_ref'][k]))}) n={len(r['hits'][k])}"
                 if r["hits"][k] else "-" for k in KINDS]
        lines.append(f"| {name} | {_pct(np.mean(allv))} of {len(allv)} | " + " | ".join(cells) + " |")
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
