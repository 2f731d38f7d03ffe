"""Measure the CPU face backends on the London set (not a test: run it to get numbers for QC thresholds).

    /work/venv/bin/python -m tests.face.measure_london [--london DIR] [--triples 20] [--out /tmp/measure]

Prints JSON: expression-descriptor distance distributions (same expression / different identity, neutral vs
smiling of one identity, different expression and identity), dlib cosine similarities of real pairs (same /
different identity), and for end-to-end triples (landmark_warp transfer + classic swap, as the pipeline runs
them) sim(R, T), sim(R, j) and expression_distance(R, T). Writes contact sheets of the triples to --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from benchmarks.london_faces import EXPRESSIONS, detected_london
from stages.face.align import ffhq_align
from stages.face.classic_swap import ClassicSwapper
from stages.face.dlib_models import DlibDetector, DlibEmbedder
from stages.face.expression import expression_descriptor, expression_distance
from stages.face.landmark_warp import LandmarkWarpTransferer
from stages.face.protocols import TransferRequest
from stages.face.quality import sharpness
from stages.face.types import face_from_landmarks


def _stats(x: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(x, np.float64)
    return {"n": int(a.size), "median": round(float(np.median(a)), 4), "p5": round(float(np.percentile(a, 5)), 4),
            "p95": round(float(np.percentile(a, 95)), 4), "min": round(float(a.min()), 4),
            "max": round(float(a.max()), 4)}


def _share(x: list[float], thr: float, below: bool, strict: bool = False) -> float:
    """Share of x at or below thr (below=True; strictly below with strict) or strictly above it."""
    a = np.asarray(x, np.float64)
    if a.size == 0:
        return float("nan")
    hit = (a < thr if strict else a <= thr) if below else a > thr
    return round(float(hit.mean()), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--london", default=str(Path(__file__).resolve().parents[2] / "data" / "faces" / "london"))
    ap.add_argument("--triples", type=int, default=20)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--out", default="/tmp/measure_london")
    args = ap.parse_args()
    root = Path(args.london)
    det, emb = DlibDetector(), DlibEmbedder()
    transferer, swapper = LandmarkWarpTransferer(), ClassicSwapper(feather_px=11)

    faces: dict[str, dict[str, dict]] = {}
    for ident, photos in detected_london(root):  # the benchmarks' one detection loop (one face per photo)
        faces[ident] = {}
        for e, (rgb, face) in photos.items():
            aligned = ffhq_align(rgb, face.landmarks68, args.crop)
            faces[ident][e] = dict(aligned=aligned, embedding=emb.embed(rgb, face),
                                   descriptor=expression_descriptor(aligned.landmarks68))
    ids = sorted(faces)

    # Expression distances and identity similarities of real photos.
    same_expr_diff_id, diff_expr_same_id, diff_expr_diff_id, sim_same, sim_diff = [], [], [], [], []
    for a_i, a in enumerate(ids):
        fa = faces[a]
        diff_expr_same_id.append(expression_distance(fa["neutral"]["descriptor"], fa["smiling"]["descriptor"]))
        sim_same.append(float(fa["neutral"]["embedding"] @ fa["smiling"]["embedding"]))
        for b in ids[a_i + 1:]:
            fb = faces[b]
            for e in EXPRESSIONS:
                same_expr_diff_id.append(expression_distance(fa[e]["descriptor"], fb[e]["descriptor"]))
                sim_diff.append(float(fa[e]["embedding"] @ fb[e]["embedding"]))
            diff_expr_diff_id.append(expression_distance(fa["neutral"]["descriptor"], fb["smiling"]["descriptor"]))
            diff_expr_diff_id.append(expression_distance(fa["smiling"]["descriptor"], fb["neutral"]["descriptor"]))

    # End-to-end triples, as the pipeline plans them: T = (i, e), S = (i, other), carrier = (j, other),
    # swap source = (j, e); QC detects R, embeds it, and compares with T's and the swap source's embeddings.
    rng = np.random.default_rng(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sim_rt, sim_rj, sim_ri_other, expr_rt, expr_carrier_t, no_face, rows = [], [], [], [], [], 0, []
    sharp_r, sharp_t = [], []
    for k in range(args.triples):
        i, j = rng.choice(len(ids), 2, replace=False)
        fi, fj = faces[ids[i]], faces[ids[j]]
        e, other = EXPRESSIONS[k % 2], EXPRESSIONS[1 - k % 2]
        t, s, carrier, src = fi[e], fi[other], fj[other], fj[e]
        req = TransferRequest(carrier["aligned"].image, carrier["aligned"].landmarks68, s["aligned"].landmarks68,
                              t["aligned"].image, t["aligned"].landmarks68, seed=k)
        moved = transferer.transfer([req])[0]
        found = det.detect(moved)
        if not found:
            no_face += 1
            continue
        r = swapper.swap(src["aligned"].image, face_from_landmarks(src["aligned"].landmarks68), moved,
                         max(found, key=lambda f: f.short_side))
        r_faces = det.detect(r)
        if not r_faces:
            no_face += 1
            continue
        rf = max(r_faces, key=lambda f: f.short_side)
        r_emb = emb.embed(r, rf)
        sim_rt.append(float(r_emb @ t["embedding"]))
        sim_rj.append(float(r_emb @ src["embedding"]))
        sim_ri_other.append(float(r_emb @ s["embedding"]))
        expr_rt.append(expression_distance(expression_descriptor(rf.landmarks68), t["descriptor"]))
        expr_carrier_t.append(expression_distance(carrier["descriptor"], t["descriptor"]))
        sharp_r.append(sharpness(r))
        sharp_t.append(sharpness(t["aligned"].image))
        rows.append(np.hstack([s["aligned"].image, t["aligned"].image, carrier["aligned"].image, moved,
                               src["aligned"].image, r]))
    for n in range(0, len(rows), 5):
        cv2.imwrite(str(out / f"triples_{n // 5:02d}.png"), np.vstack(rows[n:n + 5])[..., ::-1])

    report = {
        "identities": len(ids),
        "expression_distance": {
            "same_expression_different_identity": _stats(same_expr_diff_id),
            "neutral_vs_smiling_same_identity": _stats(diff_expr_same_id),
            "different_expression_different_identity": _stats(diff_expr_diff_id),
        },
        "dlib_cosine_real_pairs": {"same_identity": _stats(sim_same), "different_identity": _stats(sim_diff)},
        "triples": {
            "attempted": args.triples, "qc_face_found": len(sim_rt), "no_face": no_face,
            "sim_R_T": _stats(sim_rt), "sim_R_j_swap_source": _stats(sim_rj), "sim_R_S": _stats(sim_ri_other),
            "expr_dist_R_T": _stats(expr_rt), "expr_dist_carrier_T_before_transfer": _stats(expr_carrier_t),
        },
        "sharpness": {"R": _stats(sharp_r), "T": _stats(sharp_t)},
        "expression_threshold_sweep": {
            f"{thr:.2f}": {"R_T_pass": _share(expr_rt, thr, below=True),
                           "carrier_T_reject": _share(expr_carrier_t, thr, below=False),
                           "diff_expr_diff_id_reject": _share(diff_expr_diff_id, thr, below=False),
                           "same_expr_diff_id_pass": _share(same_expr_diff_id, thr, below=True)}
            for thr in (0.08, 0.09, 0.10, 0.11, 0.12, 0.13)},
        "identity_threshold_sweep": {
            f"{thr:.2f}": {"different_identity_above": _share(sim_diff, thr, below=False),
                           "same_identity_below": _share(sim_same, thr, below=True, strict=True),
                           "R_T_above": _share(sim_rt, thr, below=False),
                           "R_j_below": _share(sim_rj, thr, below=True, strict=True)}
            for thr in (0.88, 0.90, 0.92, 0.94, 0.95, 0.96)},
        "different_identity_p99": round(float(np.percentile(sim_diff, 99)), 4),
        "contact_sheets": str(out),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
