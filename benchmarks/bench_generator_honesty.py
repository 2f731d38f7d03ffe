"""Does the CPU generator put T's expression on j, or does the swap source bring it? (issue 10, item 5)

On the London set (neutral + smiling per identity) every identity i gives two targets T = (i, e), e in {neutral,
smiling}; S = (i, other), j = another identity (fixed draw), carrier = j's photo with S's label (as pairing picks
it). Ground truth: j's real photo with T's label (G). R is made by transfer + swap, as the pipeline makes it, with
the swap source being
  - G (the old pairing rule: j's photo closest to T's expression),
  - the carrier (j's other photo: the sensitivity test; an honest generator barely changes),
  - the photo the planner (pipeline/planning/rules.py) now draws (a hash of seed, round and T, blind to expression),
for the generator before issue 10 (landmark_warp_v1 + classic_swap_v1, loaded from git at --before) and now.

Measured on R (dlib landmarks detected on R, as QC does):
  gt_agree          R's landmark descriptor is nearer G than j's other photo
  mouth_agree       R's mouth open/closed (stages.face.mouth.OPEN_ASPECT) equals T's
  teeth_agree       teeth visible in R (stages.face.mouth.TEETH_SHARE) equals teeth visible in T
  ghost_teeth       T's mouth closed, yet R shows teeth (share of closed-mouth T)
  learned_agree     the learned expression net (stages/face/expression_net.py) gives R T's label
                    (happy vs neutral; probabilities renormalised over the two; on the real photos themselves
                    the net agrees with the London labels for 82 %: some "smiling" photos barely smile)
  learned_gt_agree  ... gives R the same class as G (j's real photo with T's label)
  learned_t_agree   ... gives R the same class as T
  sim_rj / sim_rt   dlib cosine of R with j's photos (mean of both) / with T

    python -m benchmarks.bench_generator_honesty [--limit 204] [--before a677ed0] [--out /tmp/honesty]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from benchmarks.common import LONDON, REPO, RESULTS, replace_section
from benchmarks.london_faces import Face, load_london
from stages.face.classic_swap import ClassicSwapper
from stages.face.dlib_models import DlibDetector, DlibEmbedder
from stages.face.expression import expression_descriptor, expression_distance
from stages.face.landmark_warp import LandmarkWarpTransferer
from stages.face.learned_expression import LearnedExpression
from stages.face.mouth import TEETH_SHARE, is_open, teeth_share
from stages.face.protocols import TransferRequest
from stages.face.types import face_from_landmarks, largest_face

OTHER = {"neutral": "smiling", "smiling": "neutral"}
LEARNED_LABEL = {"neutral": "neutral", "smiling": "happy"}


def _module_at(commit: str, path: str, name: str, tmp: Path) -> ModuleType:
    """A module loaded from `path` as it was at git `commit` (the generator before a change)."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{path}"], check=True, capture_output=True,
                         text=True).stdout
    f = tmp / f"{name}.py"
    f.write_text(src)
    spec = importlib.util.spec_from_file_location(name, f)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pipeline_pick(t_file: Path, j_files: list[Path], seed: int = 1234, round_index: int = 0) -> int:
    """pipeline.planning.rules.swap_source on the real file hashes: index into j_files (sorted by input key)."""
    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    h = hashlib.sha256("\0".join(str(p) for p in (seed, round_index, sha(t_file), "swap")).encode()).hexdigest()
    return int(h[:12], 16) % len(j_files)


def happy_share(learned: LearnedExpression, rgb: np.ndarray, lm: np.ndarray) -> float:
    """P(happy) / (P(happy) + P(neutral)) for one face, by the learned expression net."""
    p = learned.probabilities([rgb], [lm])[0]
    h, n = p[learned.classes.index("happy")], p[learned.classes.index("neutral")]
    return float(h / max(h + n, 1e-9))


def _measure(r: np.ndarray, det: DlibDetector, emb: DlibEmbedder, t: Face, g: Face, o: Face,
             learned: LearnedExpression) -> dict[str, Any] | None:
    face = largest_face(det.detect(r))
    if face is None or face.landmarks68 is None:
        return None
    lm = face.landmarks68
    d = expression_descriptor(lm)
    e = emb.embed(r, face)
    row: dict[str, Any] = dict(
        gt_agree=expression_distance(d, expression_descriptor(g.landmarks68))
        < expression_distance(d, expression_descriptor(o.landmarks68)),
        mouth_agree=is_open(lm) == is_open(t.landmarks68),
        teeth_agree=(teeth_share(r, lm) > TEETH_SHARE) == (teeth_share(t.image, t.landmarks68) > TEETH_SHARE),
        ghost_teeth=(not is_open(t.landmarks68)) and teeth_share(r, lm) > TEETH_SHARE,
        t_closed=not is_open(t.landmarks68),
        sim_rj=float(e @ (g.embedding + o.embedding) / 2), sim_rt=float(e @ t.embedding))
    p = happy_share(learned, r, lm)
    row["learned_agree"] = (p > 0.5) == (t.expression == "smiling")
    row["learned_gt_agree"] = (p > 0.5) == (happy_share(learned, g.image, g.landmarks68) > 0.5)
    row["learned_t_agree"] = (p > 0.5) == (happy_share(learned, t.image, t.landmarks68) > 0.5)
    return row


def _summary(rows: list[dict[str, Any] | None]) -> dict[str, Any]:
    ok = [r for r in rows if r is not None]
    out: dict[str, Any] = {"n": len(rows), "no_face": len(rows) - len(ok)}
    for k in ("gt_agree", "mouth_agree", "teeth_agree", "learned_agree", "learned_gt_agree", "learned_t_agree"):
        vals = [r[k] for r in ok if k in r]
        if vals:
            out[k] = round(float(np.mean(vals)), 3)
    closed = [r for r in ok if r["t_closed"]]
    out["ghost_teeth"] = round(float(np.mean([r["ghost_teeth"] for r in closed])), 3) if closed else None
    for k in ("sim_rj", "sim_rt"):
        out[k] = round(float(np.mean([r[k] for r in ok])), 4) if ok else None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--london", default=str(LONDON))
    p.add_argument("--limit", type=int, default=0, help="targets (0: all, 2 per identity)")
    p.add_argument("--before", default="a677ed0", help="git commit of the generator before issue 10")
    p.add_argument("--out", default="/tmp/generator_honesty", help="strips of examples are written here")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--no-results", action="store_true")
    p.add_argument("--skip-transfer-only", action="store_true", help="measure R only, not the transfer alone")
    args = p.parse_args(argv)
    t0 = time.time()
    london = Path(args.london)
    faces = load_london(london)
    ids = sorted(faces)
    rng = np.random.default_rng(0)
    targets = []
    for k, i in enumerate(ids):
        j = ids[(k + 1 + int(rng.integers(len(ids) - 1))) % len(ids)]
        for e in ("neutral", "smiling"):
            targets.append((i, e, j))
    if args.limit:
        targets = targets[: args.limit]
    det, emb, learned = DlibDetector(), DlibEmbedder(), LearnedExpression()
    with tempfile.TemporaryDirectory() as tmp:
        old_lw = _module_at(args.before, "stages/face/landmark_warp.py", "landmark_warp_before", Path(tmp))
        old_cs = _module_at(args.before, "stages/face/classic_swap.py", "classic_swap_before", Path(tmp))
    generators = {"before": (old_lw.LandmarkWarpTransferer(), old_cs.ClassicSwapper(feather_px=11)),
                  "after": (LandmarkWarpTransferer(), ClassicSwapper(feather_px=11))}
    results: dict[str, list[dict[str, Any] | None]] = {}
    rules: dict[str, int] = {}
    strips: list[np.ndarray] = []
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for n, (i, e, j) in enumerate(targets):
        t, s = faces[i][e], faces[i][OTHER[e]]
        g, o = faces[j][e], faces[j][OTHER[e]]  # ground truth G, and j's other photo (= the carrier)
        j_files = sorted(london / j / f"{x}.jpg" for x in ("neutral", "smiling"))
        pick = g if j_files[_pipeline_pick(london / i / f"{e}.jpg", j_files)].stem == e else o
        req = TransferRequest(o.image, o.landmarks68, s.landmarks68, t.image, t.landmarks68, seed=n)
        strip = [t.image, o.image]
        for name, (tr, sw) in generators.items():
            moved = tr.transfer([req])[0]
            if name == "after":
                rule = tr.last_rules[0]
                rules[rule] = rules.get(rule, 0) + 1
            tf = largest_face(det.detect(moved))
            tf = tf if tf is not None and tf.landmarks68 is not None else face_from_landmarks(t.landmarks68)
            if not args.skip_transfer_only:
                results.setdefault(f"{name}/transfer_only", []).append(_measure(moved, det, emb, t, g, o, learned))
            for src_name, src in (("swap=G", g), ("swap=carrier", o)):
                r = sw.swap(src.image, face_from_landmarks(src.landmarks68), moved, tf)
                results.setdefault(f"{name}/{src_name}", []).append(_measure(r, det, emb, t, g, o, learned))
                if src is pick:
                    results.setdefault(f"{name}/swap=pairing", []).append(results[f"{name}/{src_name}"][-1])
                strip.append(r)
        if n < 24:
            strips.append(np.hstack(strip))
        if (n + 1) % 8 == 0:
            print(f"{n + 1}/{len(targets)} {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    for k in range(0, len(strips), 8):
        cv2.imwrite(str(out_dir / f"strips_{k // 8:02d}.jpg"), np.vstack(strips[k:k + 8])[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 85])
    summary = {name: _summary(rows) for name, rows in results.items()}
    report = {"targets": len(targets), "identities": len(ids), "before": args.before,
              "learned_net": learned.model_id, "mouth_rules_after": rules, "seconds": round(time.time() - t0, 1),
              "variants": summary}
    print(json.dumps(report, indent=1))
    if not args.no_results:
        replace_section(Path(args.results), "## Generator honesty (issue 10, item 5)", _markdown(report, argv))
    return 0


def _markdown(report: dict[str, Any], argv: list[str] | None) -> str:
    cols = ["gt_agree", "learned_agree", "learned_gt_agree", "learned_t_agree", "mouth_agree", "teeth_agree",
            "ghost_teeth", "sim_rj", "sim_rt", "no_face"]
    cols = [c for c in cols if any(c in v for v in report["variants"].values())]
    lines = ["## Generator honesty (issue 10, item 5)", "",
             f"`python -m benchmarks.bench_generator_honesty {' '.join(argv or [])}`".replace(" `", "`"),
             "",
             f"London set, {report['identities']} identities, {report['targets']} targets (T = each identity's "
             "neutral and smiling photo; carrier = j's photo with S's label; G = j's real photo with T's label). "
             f"before = generator at {report['before']} (landmark_warp_v1 + classic_swap_v1), after = "
             "landmark_warp_v2 + classic_swap_v2. swap=G is the old pairing rule, swap=carrier the sensitivity "
             "test (another photo of j), swap=pairing the photo pairing now draws. Mouth rules applied after: "
             f"{report['mouth_rules_after']}. {report['seconds']} s on the shared 2-core machine.", "",
             "| variant | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, v in report["variants"].items():
        lines.append(f"| {name} | " + " | ".join(str(v.get(c, "")) for c in cols) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
