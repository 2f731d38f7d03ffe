"""What of the mouth benchmark's painted damage a person sees, and what the mouth checks catch of that (issue 19,
item 3). benchmarks/bench_mouth_checks.py counts every painted case; some are invisible at a set's scale (stretched
teeth on small scans), so recall over what people see is the figure that says what the checks miss.

    python -m benchmarks.bench_damage_visibility sheets --corpus DIR --out DIR [--cases 120] [--controls 40]
        [--seed 7] [--grey]
    python -m benchmarks.bench_damage_visibility score --corpus DIR --out DIR --labels FILE [--labels FILE ...]

`sheets` draws a seeded uniform sample of the set's damage cases (the same cases, in the same order, as
bench_mouth_checks's `evaluate`) and of its legit R (no damage, the controls), shuffles them and writes numbered
sheets of the lower face at 3x native pixels (16 tiles a sheet) to label blind, the key (`key.json`: which tile is
which; not for the labellers' eyes) and a labels template. `score` runs `evaluate` and joins each labels file
({"tile": "artificial" | "fine"}) with the checks' hits: controls called artificial, cases seen, caught among
those seen (95 % Wilson) and per kind; Cohen's kappa between labellers. --out must lie outside the repository: a
research-terms corpus's images may not be committed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from benchmarks.bench_mouth_checks import damage_cases, evaluate, evaluated_set
from benchmarks.bench_mouth_grey import grey, load_corpus
from benchmarks.common import LONDON
from pipeline.config import load_config
from qc.mouth_calibration import measure_real_mouths
from qc.selftest import wilson_interval

REPO = Path(__file__).resolve().parents[1]
TILE_W, TILE_H, SCALE, PER_SHEET, COLUMNS = 128, 88, 3, 16, 4


def tile(rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """The lower face around the mouth (TILE_W x TILE_H native pixels, edge pixels repeated past the photo) at
    SCALE x, nearest neighbour, BGR."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    cx, cy = np.round(lm[48:68].mean(0)).astype(int)
    pad = max(TILE_W, TILE_H)
    padded = cv2.copyMakeBorder(np.ascontiguousarray(rgb), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    x0, y0 = cx - TILE_W // 2 + pad, cy - TILE_H // 2 + pad
    crop = padded[y0:y0 + TILE_H, x0:x0 + TILE_W]
    return cv2.cvtColor(cv2.resize(crop, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST),
                        cv2.COLOR_RGB2BGR)


def draw(data: dict[str, list], as_grey: bool, cases: int, controls: int, seed: int) -> list[dict]:
    """The sampled items in sheet order: kind ("none" for a control), index among that kind's cases (as in
    evaluate's hits), base photo index, and the image a labeller sees."""
    data = evaluated_set(data, as_grey)
    m = measure_real_mouths(list(zip(data["id"], data["img"], data["lm"], strict=True)), data["key"])
    found, legit, seen = [], {}, {}
    for kind, img, base, legit_r in damage_cases(data, m):
        found.append((kind, seen.get(kind, 0), int(base), grey(img) if as_grey else img))
        seen[kind] = seen.get(kind, 0) + 1
        legit[int(base)] = legit_r
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(found), min(cases, len(found)), replace=False)
    bases = sorted(legit)
    items = [dict(kind=found[i][0], index=found[i][1], base=found[i][2], image=found[i][3]) for i in picked]
    items += [dict(kind="none", index=-1, base=b, image=legit[b])
              for b in rng.choice(bases, min(controls, len(bases)), replace=False).tolist()]
    order = rng.permutation(len(items))
    return [dict(items[o], tile=n + 1) for n, o in enumerate(order)]


def write_sheets(items: list[dict], landmarks: list[np.ndarray], out: Path) -> list[Path]:
    """Numbered sheets of PER_SHEET tiles; the key (without images) and a labels template beside them."""
    tiles = []
    for it in items:
        t = tile(it["image"], landmarks[it["base"]])
        cv2.putText(t, str(it["tile"]), (6, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 255), 2)
        tiles.append(t)
    out.mkdir(parents=True, exist_ok=True)
    blank = np.zeros_like(tiles[0])
    paths = []
    for s in range(0, len(tiles), PER_SHEET):
        chunk = tiles[s:s + PER_SHEET]
        rows = [np.hstack(chunk[r:r + COLUMNS] + [blank] * (COLUMNS - len(chunk[r:r + COLUMNS])))
                for r in range(0, len(chunk), COLUMNS)]
        sheet = np.vstack(rows)
        sheet[::blank.shape[0], :] = 255
        sheet[:, ::blank.shape[1]] = 255
        paths.append(out / f"sheet_{s // PER_SHEET + 1:02d}.png")
        cv2.imwrite(str(paths[-1]), sheet)
    (out / "key.json").write_text(json.dumps([{k: v for k, v in it.items() if k != "image"} for it in items]))
    (out / "labels_template.json").write_text(json.dumps({str(it["tile"]): "" for it in items}, indent=0))
    return paths


def cohen_kappa(a: dict[str, str], b: dict[str, str]) -> float:
    """Agreement of two labellers on the tiles both labelled, beyond chance."""
    tiles = sorted(set(a) & set(b))
    x = np.array([a[t] == "artificial" for t in tiles])
    y = np.array([b[t] == "artificial" for t in tiles])
    observed = float((x == y).mean())
    chance = float(x.mean() * y.mean() + (1 - x.mean()) * (1 - y.mean()))
    return 1.0 if chance == 1.0 else (observed - chance) / (1 - chance)


def join(key: list[dict], labels: dict[str, str], hits: dict[str, list[bool]]) -> dict:
    """One labeller's labels against the checks' hits: controls called artificial, cases seen, caught among those
    seen and not seen, per kind."""
    bad = sorted(t for t, v in labels.items() if v not in ("artificial", "fine"))
    missing = sorted({str(it["tile"]) for it in key} - set(labels), key=int)
    if bad or missing:
        raise ValueError(f"labels must give every tile 'artificial' or 'fine': missing {missing[:10]}, "
                         f"invalid {bad[:10]}")
    controls, per_kind = [], {}
    for it in key:
        called = labels[str(it["tile"])] == "artificial"
        if it["kind"] == "none":
            controls.append(called)
            continue
        per_kind.setdefault(it["kind"], []).append((called, bool(hits[it["kind"]][it["index"]])))
    pairs = [p for v in per_kind.values() for p in v]
    seen = [hit for called, hit in pairs if called]
    unseen = [hit for called, hit in pairs if not called]
    return dict(controls=len(controls), controls_called=sum(controls), cases=len(pairs), seen=len(seen),
                caught_seen=sum(seen), interval=wilson_interval(sum(seen), len(seen)), caught_unseen=sum(unseen),
                per_kind={k: dict(n=len(v), seen=sum(c for c, _ in v), caught_seen=sum(h for c, h in v if c),
                                  caught_unseen=sum(h for c, h in v if not c)) for k, v in sorted(per_kind.items())})


def _outside_repo(path: Path) -> Path:
    path = path.resolve()
    if path == REPO or REPO in path.parents:
        raise SystemExit(f"error: --out {path} lies inside the repository; write the sheets elsewhere (a "
                         "research-terms corpus's images may not be committed)")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=("sheets", "score"))
    ap.add_argument("--corpus", type=Path, default=LONDON, help="a labelled folder (default: London)")
    ap.add_argument("--out", type=Path, required=True, help="folder of the sheets and key (outside the repository)")
    ap.add_argument("--grey", action="store_true", help="the set in greyscale (as bench_mouth_checks's London grey)")
    ap.add_argument("--cases", type=int, default=120)
    ap.add_argument("--controls", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--labels", type=Path, action="append", default=[], help="a labeller's JSON (repeatable)")
    args = ap.parse_args(argv)
    out = _outside_repo(args.out)
    data = load_corpus(args.corpus)
    if args.step == "sheets":
        items = draw(data, args.grey, args.cases, args.controls, args.seed)
        sheets = write_sheets(items, data["lm"], out)
        print(f"{len(items)} tiles on {len(sheets)} sheets in {out}; label them blind into a copy of "
              f"labels_template.json without opening key.json")
        return 0
    if not args.labels:
        ap.error("score needs at least one --labels FILE")
    key = json.loads((out / "key.json").read_text())
    hits = evaluate(data, load_config().qc, args.grey)["hits"]
    labels = {p.name: json.loads(p.read_text()) for p in args.labels}
    for name, lab in labels.items():
        r = join(key, lab, hits)
        lo, hi = r["interval"]
        print(f"{name}: controls called artificial {r['controls_called']} of {r['controls']}; cases seen "
              f"{r['seen']} of {r['cases']}; caught among seen {r['caught_seen']} "
              f"({100 * r['caught_seen'] / max(r['seen'], 1):.1f} %, 95 % Wilson "
              f"[{100 * (lo or 0):.0f}, {100 * (hi or 0):.0f}]); caught among not seen {r['caught_unseen']}")
        for kind, v in r["per_kind"].items():
            print(f"  {kind}: n={v['n']} seen={v['seen']} caught_seen={v['caught_seen']} "
                  f"caught_unseen={v['caught_unseen']}")
    names = sorted(labels)
    for k, a in enumerate(names):
        for b in names[k + 1:]:
            print(f"kappa {a} / {b}: {cohen_kappa(labels[a], labels[b]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
