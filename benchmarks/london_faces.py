"""The London set (identity/{neutral,smiling}.jpg) detected, aligned and embedded once, cached as .npz."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.face.align import ffhq_align
from stages.face.image_io import decode_image

EXPRESSIONS = ("neutral", "smiling")
LONDON = Path(__file__).resolve().parents[2] / "shared" / "faces" / "london"


@dataclass
class Face:
    identity: str
    expression: str
    image: np.ndarray  # (size, size, 3) uint8 RGB, FFHQ-aligned
    landmarks68: np.ndarray  # (68, 2) float32 in crop coordinates
    embedding: np.ndarray  # (128,) float32 dlib identity embedding


def detected_london(root: Path = LONDON) -> Iterator[tuple[str, dict[str, tuple[np.ndarray, Any]]]]:
    """(identity, {expression: (RGB photo, its one dlib face)}) for every identity whose neutral and smiling
    photos each hold exactly one face (all 102 of the London set), in folder order."""
    from stages.face.dlib_models import DlibDetector
    det = DlibDetector()
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        entry: dict[str, tuple[np.ndarray, Any]] = {}
        for e in EXPRESSIONS:
            f = d / f"{e}.jpg"
            if not f.is_file():
                break
            rgb = decode_image(f.read_bytes(), 40_000_000)
            found = det.detect(rgb)
            if len(found) != 1 or found[0].landmarks68 is None:
                break
            entry[e] = (rgb, found[0])
        if len(entry) == len(EXPRESSIONS):
            yield d.name, entry


def load_london(root: Path = LONDON, size: int = 256, cache: Path | None = None) -> dict[str, dict[str, Face]]:
    """identity -> expression -> Face for every identity with both photos and exactly one face in each."""
    cache = cache or Path("/tmp") / f"london_faces_{size}.npz"
    if cache.is_file():
        with np.load(cache) as z:  # each z[key] decompresses the whole array: read every array once
            arrays = {k: z[k] for k in ("identity", "expression", "image", "landmarks", "embedding")}
        out: dict[str, dict[str, Face]] = {}
        for k, ident in enumerate(arrays["identity"]):
            e = str(arrays["expression"][k])
            out.setdefault(str(ident), {})[e] = Face(str(ident), e, arrays["image"][k], arrays["landmarks"][k],
                                                     arrays["embedding"][k])
        return out
    from stages.face.dlib_models import DlibEmbedder
    emb = DlibEmbedder()
    faces: dict[str, dict[str, Face]] = {}
    for ident, photos in detected_london(root):
        faces[ident] = {}
        for e, (rgb, face) in photos.items():
            a = ffhq_align(rgb, face.landmarks68, size)
            faces[ident][e] = Face(ident, e, a.image, np.asarray(a.landmarks68, np.float32),
                                   np.asarray(emb.embed(rgb, face), np.float32))
    flat = [f for e in faces.values() for f in e.values()]
    np.savez(cache, identity=np.array([f.identity for f in flat]), expression=np.array([f.expression for f in flat]),
             image=np.stack([f.image for f in flat]), landmarks=np.stack([f.landmarks68 for f in flat]),
             embedding=np.stack([f.embedding for f in flat]))
    return faces
