"""Remnants of an open carrier's mouth on the lips the expression transfer closes (landmark_warp's close_lips), v2
(the carrier warped as it is) against v3 (its interior filled from its lips first, stages.face.mouth.fill_interior).

    python -m benchmarks.bench_closing_remnants [--london DIR] [--grey] [--corpus DIR]

London: for every identity i (sorted), T = i's neutral photo, S = i's smiling photo, the carrier the next identity's
smiling photo (a closing transfer whenever the mouth rule says close_lips). The measure (`remnant_pixels`): lip
pixels away from the lip line (a 5 px band along the midline of the inner lips) more than 30 L (CIELAB, 0-255) from
the lips' median lightness, at the transfer's own landmarks: the specks, strokes and fragments the warp leaves
there (the artifacts of the 17 labelled R of tests/fixtures/r_mouths). Luminance only, so it reads grey photos too
(--grey: every London photo converted to L first, as London in greyscale). --corpus: a labelled folder
(bench_mouth_grey's loader, e.g. JAFFE-style names) instead, T = each identity's first neutral (NE) photo, S and the
next identity's carrier its first happy (HA) photo; only aggregate figures are printed (research-terms corpora).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import LONDON, machine
from benchmarks.london_faces import load_london
from stages.face.landmark_warp import LandmarkWarpTransferer, transfer_geometry
from stages.face.mouth import OUTER_LIP, polygon_mask
from stages.face.protocols import TransferRequest

CONTRAST = 30.0
LINE_PX = 5


def remnant_pixels(rgb: np.ndarray, landmarks68: np.ndarray, contrast: float = CONTRAST) -> int:
    """Lip pixels away from the lip line more than `contrast` L from the lips' median lightness."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    h, w = rgb.shape[:2]
    light = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    mid = (lm[[60, 61, 62, 63, 64]] + lm[[60, 67, 66, 65, 64]]) * 0.5
    line = np.zeros((h, w), np.uint8)
    cv2.polylines(line, [np.round(mid).astype(np.int32)], False, 255, thickness=LINE_PX)
    zone = (polygon_mask(lm[OUTER_LIP], h, w) > 127) & (line == 0)
    if zone.sum() < 8:
        return 0
    return int((zone & (np.abs(light - np.median(light[zone])) > contrast)).sum())


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def closing_remnants(faces: dict, limit: int | None = None, grey: bool = False) -> np.ndarray:
    """(v2, v3) remnant pixels of every closing transfer of the pairs described above (first `limit` identities;
    grey: the photos converted to grey first)."""
    ids = sorted(faces)[:limit]
    look = _grey if grey else np.ascontiguousarray
    v3, v2 = LandmarkWarpTransferer(), LandmarkWarpTransferer(fill_closing_interior=False)
    out = []
    for i, j in zip(ids, ids[1:] + ids[:1], strict=True):
        c, s, t = faces[j]["smiling"], faces[i]["smiling"], faces[i]["neutral"]
        req = TransferRequest(look(c.image), c.landmarks68, s.landmarks68, look(t.image), t.landmarks68, seed=0)
        new, rule = v3.transfer_with_rule(req)
        if rule != "close_lips":
            continue
        lm = transfer_geometry(c.landmarks68, s.landmarks68, t.landmarks68)
        out.append((remnant_pixels(v2.transfer_one(req), lm), remnant_pixels(new, lm)))
    return np.array(out, np.int64).reshape(-1, 2)


def corpus_faces(root: Path) -> dict:
    """identity -> {"neutral", "smiling"}: the first NE and HA photo of every identity that has both (aligned)."""
    from types import SimpleNamespace

    from benchmarks.bench_mouth_grey import load_corpus
    data = load_corpus(root)
    out: dict = {}
    for img, lm, ident, ex in zip(data["img"], data["lm"], data["id"], data["ex"], strict=True):
        key = {"NE": "neutral", "HA": "smiling"}.get(str(ex).upper())
        if key is not None:
            out.setdefault(str(ident), {}).setdefault(key, SimpleNamespace(image=img, landmarks68=lm))
    return {k: v for k, v in out.items() if len(v) == 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--london", type=Path, default=LONDON)
    ap.add_argument("--grey", action="store_true", help="London in greyscale")
    ap.add_argument("--corpus", type=Path, help="a labelled corpus folder instead of London")
    args = ap.parse_args()
    faces = corpus_faces(args.corpus) if args.corpus else load_london(args.london)
    r = closing_remnants(faces, grey=args.grey)
    print(machine(), f"| {args.corpus.name}" if args.corpus else "| London in greyscale" if args.grey else
          "| London colour")
    for name, col in (("v2 (carrier as it is)", r[:, 0]), ("v3 (interior filled)", r[:, 1])):
        print(f"{name}: {len(col)} closing transfers, remnant pixels mean {col.mean():.1f}, median "
              f"{np.median(col):.1f}, transfers with >= 5: {(col >= 5).sum()}")
    print(f"v3 fewer than v2: {(r[:, 1] < r[:, 0]).sum()}, more: {(r[:, 1] > r[:, 0]).sum()}")


if __name__ == "__main__":
    main()
