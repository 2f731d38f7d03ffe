"""Does QC tell good triples from bad? Ground truth built from the London set (102 identities x {neutral, smiling}).

    python -m benchmarks.bench_qc_validity [--london DIR] [--run RUN_URL ...] [--round OUTPUT_ROOT] [--write-results]
    python -m benchmarks.bench_qc_validity --corpus DIR [--corpus DIR ...] [--grey-london] [--splits N]
        [--write-results]

With --corpus (any labelled corpus folder: identity/expression.jpg folders or JAFFE-style names), the QC self-test's
promise beside the labelled truth, per set and per class (benchmarks/qc_promise.py); London in colour is always one
of the sets, --grey-london adds it in greyscale.

- identity AUC: dlib cosine similarity, real same-identity vs different-identity photo pairs;
- expression AUC: neutral-vs-smiling pairs vs same-expression pairs, always across identities, scored by the
  landmark descriptor distance (the QC score before issue 10), by the learned net's total-variation
  distance (`expr_prob_dist_rt`) and by R's contrast on the axis from S's expression to T's
  (`expr_contrast_st`, the shipped check; S = T's identity in the other expression);
- artifact check: precision/recall of the mouth checks (qc/mouth.py + qc/decide.py, shipped thresholds) on
  cases built from the London faces (qc/artifact_cases.py: ghosted teeth over closed lips, pasted seams, blurred
  mouths) against the untouched photos;
- acceptance precision of full rounds: for each --run (or a fresh London round with --round), the share of
  accepted R whose learned expression class agrees with T's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import LONDON, auc, machine
from pipeline.config import load_config
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
from stages.face.expression import expression_descriptor, expression_distance

MOUTH = {REASON_GHOST_TEETH, REASON_MOUTH_SEAM, REASON_MOUTH_BLUR, REASON_MOUTH_STATE}


def load_london(root: Path) -> dict:
    from benchmarks.london_faces import detected_london
    from stages.face.align import ffhq_align
    from stages.face.dlib_models import DlibEmbedder

    emb = DlibEmbedder()
    out: dict = {"ids": [], "exprs": [], "imgs": [], "lms": [], "embs": []}
    for ident, photos in detected_london(root):
        for e, (rgb, face) in photos.items():
            a = ffhq_align(rgb, face.landmarks68, 256)
            v = np.asarray(emb.embed(rgb, face), np.float64)
            for k, x in zip(("ids", "exprs", "imgs", "lms", "embs"), (ident, e, a.image, a.landmarks68,
                                                                     v / np.linalg.norm(v)), strict=True):
                out[k].append(x)
    return {k: np.asarray(v) if k != "imgs" else np.stack(v) for k, v in out.items()}


def identity_auc(data: dict) -> dict:
    e, ids = data["embs"], data["ids"]
    s = e @ e.T
    iu = np.triu_indices(len(ids), 1)
    same = ids[iu[0]] == ids[iu[1]]
    return {"identity_auc": auc(s[iu][same], s[iu][~same]), "same_pairs": int(same.sum()),
            "different_pairs": int((~same).sum())}


def _pair_sets(ids: np.ndarray, ex: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(a, b, positive) over photo pairs of different identities: every such pair ('all', positive = the two
    expressions differ), and pairs anchored on a neutral / smiling T (positive = the other photo's expression
    differs from T's)."""
    n = len(ids)
    iu = np.triu_indices(n, 1)
    cross = ids[iu[0]] != ids[iu[1]]
    out = {"all": (iu[0][cross], iu[1][cross], ex[iu[0][cross]] != ex[iu[1][cross]])}
    for anchor in ("neutral", "smiling"):
        a, b = zip(*[(k, m) for k in range(n) if ex[k] == anchor for m in range(n) if ids[m] != ids[k]],
                   strict=True)
        aa, bb = np.asarray(a), np.asarray(b)
        out[f"T {anchor}"] = (aa, bb, ex[bb] != anchor)
    return out


def expression_auc(data: dict, net=None) -> dict:
    ids, ex = data["ids"], data["exprs"]
    sets = _pair_sets(ids, ex)
    desc = np.stack([expression_descriptor(lm) for lm in data["lms"]])
    out: dict = {"pairs": {k: int(len(v[0])) for k, v in sets.items()}, "landmark_auc": {}, "learned_auc": {}}
    for k, (a, b, pos) in sets.items():
        land = np.array([expression_distance(desc[x], desc[y]) for x, y in zip(a, b, strict=True)])
        out["landmark_auc"][k] = auc(land[pos], land[~pos])
    if net is not None:
        p = net.probabilities(list(data["imgs"]), list(data["lms"])).astype(np.float64)
        for k, (a, b, pos) in sets.items():
            tv = 0.5 * np.abs(p[a] - p[b]).sum(axis=1)
            out["learned_auc"][k] = auc(tv[pos], tv[~pos])
        out["contrast_auc"] = contrast_auc(ids, ex, p)
        smiling = ex == "smiling"
        happy = p[:, net.classes.index("happy")]
        out["single_image_happy_auc"] = auc(happy[smiling], happy[~smiling])
        labels = np.array([net.label(x) for x in p])
        out["learned_labels"] = {e: {lab: int(((ex == e) & (labels == lab)).sum()) for lab in sorted(set(labels))}
                                 for e in ("neutral", "smiling")}
    return out


def contrast_auc(ids: np.ndarray, ex: np.ndarray, p: np.ndarray) -> dict:
    """The shipped QC's expression score, `expr_contrast_st`, on every (T, S, R): T a photo of identity i, S i's
    other photo, R a real photo of another identity; positive = R has T's expression. Also by T's expression."""
    from qc.expression_score import expression_contrast

    n = len(ids)
    other = {k: m for k in range(n) for m in range(n) if m != k and ids[m] == ids[k]}
    t_idx, r_idx = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    cross = ids[t_idx] != ids[r_idx]
    t_idx, r_idx = t_idx[cross], r_idx[cross]
    c = np.array([expression_contrast(p[r], p[other[t]], p[t]) for r, t in zip(r_idx, t_idx, strict=True)])
    pos = ex[r_idx] == ex[t_idx]
    out = {"all": auc(c[pos], c[~pos]), "triples": int(len(c)),
           "passes_with_t_expression": float(np.mean(c[pos] >= 0)),
           "passes_with_s_expression": float(np.mean(c[~pos] >= 0))}
    for anchor in ("neutral", "smiling"):
        m = ex[t_idx] == anchor
        out[f"T {anchor}"] = auc(c[m & pos], c[m & ~pos])
    return out


def artifact_cases(data: dict, seed: int = 0) -> list[tuple[str, np.ndarray, int]]:
    """(kind, image, index of the base face) for every case; kind 'clean' is the untouched photo."""
    from qc import artifact_cases as ac

    imgs, lms, ex = data["imgs"], data["lms"], data["exprs"]
    rng = np.random.default_rng(seed)
    neutral = [k for k in range(len(ex)) if ex[k] == "neutral"]
    toothy = [k for k in range(len(ex)) if ex[k] == "smiling" and mouth_scores(imgs[k], lms[k]).teeth_share > 0.1]
    cases: list[tuple[str, np.ndarray, int]] = [("clean", imgs[k], k) for k in range(len(ex))]
    for n, b in enumerate(neutral):
        donor = toothy[rng.integers(len(toothy))]
        cases.append(("ghost_teeth", ac.ghost_teeth(imgs[b], lms[b], imgs[donor], lms[donor],
                                                    alpha=float(rng.uniform(0.4, 0.7))), b))
        other = neutral[(n + 7) % len(neutral)]
        cases.append(("seam", ac.seam(imgs[b], lms[b], imgs[other], gain=float(rng.uniform(0.85, 1.15))), b))
        cases.append(("blur", ac.blur(imgs[b], lms[b], float(rng.uniform(0.025, 0.05))), b))
    return cases


def artifact_pr(data: dict, thresholds: Thresholds) -> dict:
    """Mouth checks on the cases, T = the untouched base photo (so only the artifact differs)."""
    flagged: dict[str, list[bool]] = {}
    for kind, img, base in artifact_cases(data):
        lm = data["lms"][base]
        r, t = mouth_scores(img, lm), mouth_scores(data["imgs"][base], lm)
        s = Scores(face_found=True, r_mouth_aspect=r.mouth_aspect, t_mouth_aspect=t.mouth_aspect,
                   r_teeth=r.teeth_share, t_teeth=t.teeth_share, r_lip_line=r.lip_line_whiteness,
                   mouth_seam=r.seam_score, mouth_sharpness_ratio=r.sharpness_ratio)
        flagged.setdefault(kind, []).append(bool(set(failed_checks(s, thresholds)) & MOUTH))
    tp = sum(sum(v) for k, v in flagged.items() if k != "clean")
    pos = sum(len(v) for k, v in flagged.items() if k != "clean")
    fp = sum(flagged["clean"])
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(pos, 1),
            "false_alarm_rate": fp / len(flagged["clean"]),
            "recall_by_kind": {k: float(np.mean(v)) for k, v in flagged.items() if k != "clean"},
            "cases": {k: len(v) for k, v in flagged.items()}}


def acceptance_precision(run_url: str, net) -> dict:
    """Share of accepted R (latest decision) whose learned class equals T's, from the run's images."""
    from manifests.artifacts import ArtifactStore
    from manifests.query import connect
    from manifests.store import ManifestStore
    from stages.face.dlib_models import DlibDetector
    from stages.face.types import largest_face

    con = connect(ManifestStore.open(run_url))
    rows = con.execute("select t.r_path, t.t_path, s.landmarks68, t.expression from triples t join sources s "
                       "on s.source_id = t.t_source_id order by t.triple_id").fetchall()
    total = con.execute("select count(*) from qc").fetchall()[0][0]
    art, det = ArtifactStore(run_url), DlibDetector()
    agree: list[bool] = []
    by_expr: dict[str, list[bool]] = {}
    no_face = 0
    for r_path, t_path, t_lm, expr in rows:
        r = art.get(r_path)
        face = largest_face(det.detect(r))
        if face is None or face.landmarks68 is None:
            no_face += 1
            agree.append(False)
            continue
        p = net.probabilities([r, art.get(t_path)], [face.landmarks68, np.asarray(t_lm, np.float32).reshape(68, 2)])
        ok = net.label(p[0]) == net.label(p[1])
        agree.append(ok)
        by_expr.setdefault(expr, []).append(ok)
    return {"run": run_url, "candidates": int(total), "accepted": len(rows),
            "acceptance_precision": float(np.mean(agree)) if agree else float("nan"),
            "by_t_expression": {k: f"{np.mean(v):.3f} of {len(v)}" for k, v in by_expr.items()},
            "r_without_face": no_face}


def fresh_round(output_root: str, london: Path) -> str:
    from pipeline.run_idi import run_idi

    cfg = load_config(overrides=[f"corpus.root={london}", f"run.output_root={output_root}", "run.name=london",
                                 "ray.num_cpus=2"])
    return run_idi(cfg)["timing"]["run_url"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--london", default=str(LONDON))
    ap.add_argument("--run", action="append", default=[], help="judge this run's accepted triples")
    ap.add_argument("--round", help="run a fresh London round under this output root, then judge it")
    ap.add_argument("--no-net", action="store_true", help="without the expression net (code before issue 10)")
    ap.add_argument("--json", help="write the figures as JSON here")
    ap.add_argument("--corpus", action="append", default=[], help="a labelled corpus folder: self-test vs truth")
    ap.add_argument("--grey-london", action="store_true", help="with --corpus: London in greyscale as a set too")
    ap.add_argument("--splits", type=int, default=20, help="with --corpus: random halvings of the identities")
    ap.add_argument("--write-results", action="store_true", help="with --corpus: replace the section in RESULTS.md")
    args = ap.parse_args()
    if args.corpus:
        return promise_main(args)
    started = time.monotonic()
    net = None
    if not args.no_net:
        from stages.face.learned_expression import LearnedExpression
        net = LearnedExpression()
    data = load_london(Path(args.london))
    res: dict = {"images": len(data["ids"]), "identities": len(set(data["ids"]))}
    res["identity"] = identity_auc(data)
    res["expression"] = expression_auc(data, net)
    res["artifacts"] = artifact_pr(data, Thresholds.from_config(load_config().qc))
    runs = list(args.run) + ([fresh_round(args.round, Path(args.london))] if args.round else [])
    if net is not None:
        res["rounds"] = [acceptance_precision(u, net) for u in runs]
    res["seconds"] = round(time.monotonic() - started, 1)
    res["machine"] = f"{machine()}, load {os.getloadavg()[0]:.1f}"
    print(json.dumps(res, indent=1, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    return 0


PROMISE_HEADING = "## QC self-test: promise vs labelled truth, per set and class (issue 19)"


def promise_main(args: argparse.Namespace) -> int:
    from benchmarks.common import RESULTS, replace_section
    from benchmarks.qc_promise import load_set, report
    from qc.config import QCConfig

    started = time.monotonic()
    sets = [load_set("London", Path(args.london), False)]
    if args.grey_london:
        sets.append(load_set("London grey", Path(args.london), True))
    sets += [load_set(Path(c).name, Path(c), False) for c in args.corpus]
    text, figures = report(sets, QCConfig(), args.splits)
    cmd = "python -m benchmarks.bench_qc_validity " + " ".join(
        [f"--corpus {Path(c).name}" for c in args.corpus] + (["--grey-london"] if args.grey_london else [])
        + [f"--splits {args.splits}", "--write-results"])
    section = (f"{PROMISE_HEADING}\n\n`{cmd}` ({machine()}, {time.monotonic() - started:.0f} s; shipped config: "
               f"qc.expression.max_false_pass 0.05, min_class_recall 0.5).\n{text}\n")
    print(section)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    if args.write_results:
        replace_section(RESULTS, PROMISE_HEADING, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
