"""The London set (identity/{neutral,smiling}.jpg) detected, aligned and embedded once, cached as .npz."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    from stages.face.dlib_models import DlibDetector, DlibEmbedder
    det, emb = DlibDetector(), DlibEmbedder()
    faces: dict[str, dict[str, Face]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        entry: dict[str, Face] = {}
        for e in EXPRESSIONS:
            f = d / f"{e}.jpg"
            if not f.is_file():
                break
            rgb = decode_image(f.read_bytes(), 40_000_000)
            found = det.detect(rgb)
            if len(found) != 1:
                break
            lm68 = found[0].landmarks68
            assert lm68 is not None, "the dlib detector gives 68 landmarks"
            a = ffhq_align(rgb, lm68, size)
            entry[e] = Face(d.name, e, a.image, np.asarray(a.landmarks68, np.float32),
                            np.asarray(emb.embed(rgb, found[0]), np.float32))
        if len(entry) == len(EXPRESSIONS):
            faces[d.name] = entry
    flat = [f for e in faces.values() for f in e.values()]
    np.savez(cache, identity=np.array([f.identity for f in flat]), expression=np.array([f.expression for f in flat]),
             image=np.stack([f.image for f in flat]), landmarks=np.stack([f.landmarks68 for f in flat]),
             embedding=np.stack([f.embedding for f in flat]))
    return faces
