"""Does R's eye and brow geometry follow the expression transfer, or j's swap photo? (issue 19, item 5)

R is made as the pipeline makes it: the landmark-warp transfer re-poses j's carrier photo (the photo with S's
label) with T - S, then the classic swap pastes j's swap photo onto it. The swap photo is varied over j's other
photos (other expressions), so a swap that carries expression shows it in R. Compared:
  before  identity_swap.keep_regions = [mouth]  (the swap until issue 19: only the mouth stays the transfer's)
  after   the default keep_regions (eyes, brows and mouth stay the transfer's)

Measured on dlib landmarks detected on R, the transfer X and the swap photo P (as QC detects them):
  ear        eye aspect ratio (mean of both eyes: lid distances over corner distance)
  brow       brow height: brow centre to eye centre over the inter-ocular distance (mean of both sides)
  |R-X|, |R-P|  mean absolute difference of R's value from the transfer's / the swap photo's
  follows_X  share of items where R is nearer X than P, among those where X and P differ by more than the
             landmark noise (ear 0.03, brow 0.02)
  sim_rj / sim_ri  dlib cosine of R with j (mean embedding of all j's photos) / with i (mean of i's photos)

Corpora: London (identity/{neutral,smiling}.jpg; T = each identity's photo, swap photo = j's photo with the
other label than the carrier's and the carrier's own), and any JAFFE-style labelled folder (--corpus; local
only, aggregate figures only: T = one photo per class of i, S = i's neutral (happy for a neutral T), carrier =
j's neutral (happy), swap photos = j's photos of --swap-classes).

    python -m benchmarks.bench_swap_regions [--london-limit 102] [--corpus DIR] [--grey]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import LONDON, RESULTS, machine, replace_section
from stages.face.classic_swap import ClassicSwapper
from stages.face.dlib_models import DlibDetector, DlibEmbedder
from stages.face.landmark_warp import LandmarkWarpTransferer
from stages.face.protocols import TransferRequest
from stages.face.types import face_from_landmarks, largest_face

HEADING = "## Swap keeps the transfer's expression regions (issue 19, item 5)"
NOISE = {"ear": 0.03, "brow": 0.02}
VARIANTS = {"before": ("mouth",), "after": ("left-eye", "right-eye", "left-eyebrow", "right-eyebrow", "mouth")}


@dataclass
class Photo:
    identity: str
    label: str
    image: np.ndarray  # aligned RGB
    landmarks68: np.ndarray
    embedding: np.ndarray


def eye_aspect(lm: np.ndarray) -> float:
    """Mean eye aspect ratio of both eyes (Soukupova & Cech): (|p1-p5| + |p2-p4|) / (2 |p0-p3|)."""
    out = []
    for s in (36, 42):
        p = lm[s:s + 6]
        out.append((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2 * np.linalg.norm(p[0] - p[3])))
    return float(np.mean(out))


def brow_height(lm: np.ndarray) -> float:
    """Mean distance from each brow's centre to its eye's centre, over the inter-ocular distance."""
    eyes = [lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)]
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    return float(np.mean([np.linalg.norm(lm[17:22].mean(axis=0) - eyes[0]),
                          np.linalg.norm(lm[22:27].mean(axis=0) - eyes[1])]) / iod)


def geometry(lm: np.ndarray) -> dict[str, float]:
    return {"ear": eye_aspect(lm), "brow": brow_height(lm)}


def _photos_london(root: Path) -> list[Photo]:
    from benchmarks.london_faces import load_london
    return [Photo(f.identity, f.expression, f.image, f.landmarks68, f.embedding)
            for e in load_london(root).values() for f in e.values()]


def _photos_corpus(root: Path, grey: bool, emb: DlibEmbedder) -> list[Photo]:
    from benchmarks.bench_mouth_grey import load_corpus
    data = load_corpus(root, as_grey=grey)
    return [Photo(i, e, im, lm, np.asarray(emb.embed(im, face_from_landmarks(lm)), np.float32))
            for im, lm, i, e in zip(data["img"], data["lm"], data["id"], data["ex"], strict=True)]


def _items_london(photos: list[Photo], limit: int) -> list[tuple[Photo, Photo, Photo, list[Photo]]]:
    """(T, S, carrier, swap photos) for London: carrier = j's photo with S's label; swap photos = both of j's."""
    by = {(p.identity, p.label): p for p in photos}
    ids = sorted({p.identity for p in photos})
    other = {"neutral": "smiling", "smiling": "neutral"}
    rng = np.random.default_rng(0)
    items = []
    for k, i in enumerate(ids):
        j = ids[(k + 1 + int(rng.integers(len(ids) - 1))) % len(ids)]
        e = ("neutral", "smiling")[k % 2]
        items.append((by[i, e], by[i, other[e]], by[j, other[e]], [by[j, "neutral"], by[j, "smiling"]]))
    return items[:limit] if limit else items


def _items_corpus(photos: list[Photo], swap_classes: list[str],
                  limit: int) -> list[tuple[Photo, Photo, Photo, list[Photo]]]:
    """(T, S, carrier, swap photos): one T per class of each identity, S = i's NE (HA for an NE T), carrier = j's
    photo with S's label, swap photos = j's first photo of each swap class."""
    first: dict[tuple[str, str], Photo] = {}
    for p in photos:
        first.setdefault((p.identity, p.label), p)
    ids = sorted({p.identity for p in photos})
    items = []
    for k, i in enumerate(ids):
        j = ids[(k + 1) % len(ids)]
        for (ii, label), t in sorted(first.items(), key=lambda kv: kv[0]):
            s_label = "HA" if label == "NE" else "NE"
            if ii != i or (i, s_label) not in first or (j, s_label) not in first:
                continue
            swaps = [first[j, c] for c in swap_classes if (j, c) in first]
            items.append((t, first[i, s_label], first[j, s_label], swaps))
    return items[:limit] if limit else items


def _mean_embedding(photos: list[Photo], identity: str) -> np.ndarray:
    e = np.mean([p.embedding for p in photos if p.identity == identity], axis=0)
    return e / np.linalg.norm(e)


def measure(photos: list[Photo], items: list[tuple[Photo, Photo, Photo, list[Photo]]]) -> dict[str, Any]:
    """Per variant: the geometry and identity figures over every (item, swap photo)."""
    det, emb = DlibDetector(), DlibEmbedder()
    transferer = LandmarkWarpTransferer()
    swappers = {name: ClassicSwapper(feather_px=11, keep_regions=regions) for name, regions in VARIANTS.items()}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    no_face = dict.fromkeys(VARIANTS, 0)
    t0 = time.time()
    for n, (t, s, c, swaps) in enumerate(items):
        moved = transferer.transfer([TransferRequest(c.image, c.landmarks68, s.landmarks68, t.image, t.landmarks68,
                                                     seed=n)])[0]
        xf = largest_face(det.detect(moved))
        xf = xf if xf is not None and xf.landmarks68 is not None else face_from_landmarks(t.landmarks68)
        gx = geometry(xf.landmarks68)
        ej, ei = _mean_embedding(photos, c.identity), _mean_embedding(photos, t.identity)
        for p in swaps:
            gp = geometry(p.landmarks68)
            for name, swapper in swappers.items():
                r = swapper.swap(p.image, face_from_landmarks(p.landmarks68), moved, xf)
                rf = largest_face(det.detect(r))
                if rf is None or rf.landmarks68 is None:
                    no_face[name] += 1
                    continue
                gr = geometry(rf.landmarks68)
                e = emb.embed(r, rf)
                row = {"sim_rj": float(e @ ej), "sim_ri": float(e @ ei)}
                for k in NOISE:
                    row[f"{k}_rx"], row[f"{k}_rp"], row[f"{k}_xp"] = (abs(gr[k] - gx[k]), abs(gr[k] - gp[k]),
                                                                      abs(gx[k] - gp[k]))
                rows[name].append(row)
        if (n + 1) % 10 == 0:
            print(f"{n + 1}/{len(items)} {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    return {name: summary(rs, no_face[name]) for name, rs in rows.items()}


def summary(rows: list[dict[str, float]], no_face: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows), "no_face": no_face}
    for k, noise in NOISE.items():
        out[f"{k}_|R-X|"] = round(float(np.mean([r[f"{k}_rx"] for r in rows])), 4)
        out[f"{k}_|R-P|"] = round(float(np.mean([r[f"{k}_rp"] for r in rows])), 4)
        informative = [r for r in rows if r[f"{k}_xp"] > noise]
        out[f"{k}_follows_X"] = (round(float(np.mean([r[f"{k}_rx"] < r[f"{k}_rp"] for r in informative])), 3)
                                 if informative else None)
        out[f"{k}_informative"] = len(informative)
    for k in ("sim_rj", "sim_ri"):
        out[k] = round(float(np.mean([r[k] for r in rows])), 4)
    return out


def _markdown(report: dict[str, Any], argv: list[str] | None) -> str:
    cols = ["n", "ear_|R-X|", "ear_|R-P|", "ear_follows_X", "ear_informative", "brow_|R-X|", "brow_|R-P|",
            "brow_follows_X", "brow_informative", "sim_rj", "sim_ri", "no_face"]
    lines = [HEADING, "", f"`python -m benchmarks.bench_swap_regions {' '.join(argv or [])}`".replace(" `", "`"), "",
             f"Machine: {report['machine']}. {report['seconds']} s. R = classic swap of j's swap photo P onto the "
             "landmark-warp transfer X (j's carrier re-posed with T - S). before: keep_regions [mouth] (the swap "
             "until now), after: the default (eyes, brows, mouth). ear = eye aspect ratio, brow = brow height over "
             "the inter-ocular distance, both from dlib landmarks detected on R; follows_X = share of R nearer X "
             "than P where X and P differ by more than the landmark noise (ear 0.03, brow 0.02; `informative` "
             "items). sim_rj / sim_ri: dlib cosine of R with j's / i's mean embedding. The classic swap warps P "
             "onto X's landmarks, so R's landmark geometry followed X mostly even before; keeping the regions "
             "gives R X's own eye, lid and brow pixels (iris, sclera, lid folds), which is what moves the "
             "remaining items. Identity should not move: X is j's carrier re-posed, so its eyes are j's.", ""]
    for corpus, variants in report["corpora"].items():
        lines += [f"**{corpus}** ({report['items'][corpus]} transfers)", "",
                  "| variant | " + " | ".join(c.replace("|", "\\|") for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        lines += [f"| {name} | " + " | ".join(str(v.get(c, "")) for c in cols) + " |" for name, v in variants.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--london", default=str(LONDON))
    p.add_argument("--london-limit", type=int, default=0, help="London targets (0: one per identity)")
    p.add_argument("--corpus", action="append", default=[], help="a JAFFE-style labelled folder (repeatable)")
    p.add_argument("--grey", action="store_true", help="also London in greyscale")
    p.add_argument("--swap-classes", default="SU,HA,AN", help="j's photos used as swap photos on --corpus")
    p.add_argument("--corpus-limit", type=int, default=0)
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args(argv)
    t0 = time.time()
    report: dict[str, Any] = {"machine": machine(), "corpora": {}, "items": {}}
    london = _photos_london(Path(args.london))
    sets = {"London": (london, _items_london(london, args.london_limit))}
    if args.grey:
        from benchmarks.bench_mouth_grey import grey
        grey_london = [Photo(x.identity, x.label, grey(x.image), x.landmarks68, x.embedding) for x in london]
        sets["London, greyscale"] = (grey_london, _items_london(grey_london, args.london_limit))
    emb = DlibEmbedder()
    for folder in args.corpus:
        photos = _photos_corpus(Path(folder), True, emb)
        sets[f"{Path(folder).name} (greyscale, local only)"] = (
            photos, _items_corpus(photos, args.swap_classes.split(","), args.corpus_limit))
    for name, (photos, items) in sets.items():
        report["items"][name] = len(items)
        report["corpora"][name] = measure(photos, items)
        print(name, json.dumps(report["corpora"][name]), file=sys.stderr, flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=1))
    if not args.no_results:
        replace_section(Path(args.results), HEADING, _markdown(report, argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
