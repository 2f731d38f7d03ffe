"""The London set (identity/{neutral,smiling}.jpg) detected, aligned and embedded once, cached as .npz."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import LONDON
from stages.face.align import ffhq_align
from stages.face.image_io import decode_image

EXPRESSIONS = ("neutral", "smiling")


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
    for d in _identity_folders(root):
        entry = _detected(det, d)
        if entry is not None:
            yield d.name, entry


def _identity_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def _detected(det: Any, folder: Path) -> dict[str, tuple[np.ndarray, Any]] | None:
    """{expression: (RGB photo, its one face)}, or None unless every expression's photo holds exactly one face."""
    entry: dict[str, tuple[np.ndarray, Any]] = {}
    for e in EXPRESSIONS:
        f = folder / f"{e}.jpg"
        if not f.is_file():
            return None
        rgb = decode_image(f.read_bytes(), 40_000_000)
        found = det.detect(rgb)
        if len(found) != 1 or found[0].landmarks68 is None:
            return None
        entry[e] = (rgb, found[0])
    return entry


_MODELS: dict[str, Any] = {}  # a pool process's detector and embedder, loaded on its first folder


def _aligned_faces(folder: Path, size: int) -> dict[str, Face] | None:
    """One identity folder detected, FFHQ-aligned at `size` and embedded (run in a pool process)."""
    from stages.face.dlib_models import DlibDetector, DlibEmbedder
    if not _MODELS:
        _MODELS.update(det=DlibDetector(), emb=DlibEmbedder())
    photos = _detected(_MODELS["det"], folder)
    if photos is None:
        return None
    faces = {}
    for e, (rgb, face) in photos.items():
        a = ffhq_align(rgb, face.landmarks68, size)
        faces[e] = Face(folder.name, e, a.image, np.asarray(a.landmarks68, np.float32),
                        np.asarray(_MODELS["emb"].embed(rgb, face), np.float32))
    return faces


def _listing_digest(root: Path) -> str:
    """A digest of the folder and its files (names and sizes): the default cache of one corpus is never read for
    another (the demo corpus's 12 identities for London's 102)."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(f"{path.relative_to(root)}:{path.stat().st_size}\n".encode())
    return h.hexdigest()[:12]


def load_london(root: Path = LONDON, size: int = 256, cache: Path | None = None) -> dict[str, dict[str, Face]]:
    """identity -> expression -> Face for every identity with both photos and exactly one face in each."""
    cache = cache or Path("/tmp") / f"london_faces_{size}_{_listing_digest(root)}.npz"
    if cache.is_file():
        with np.load(cache) as z:  # each z[key] decompresses the whole array: read every array once
            arrays = {k: z[k] for k in ("identity", "expression", "image", "landmarks", "embedding")}
        out: dict[str, dict[str, Face]] = {}
        for k, ident in enumerate(arrays["identity"]):
            e = str(arrays["expression"][k])
            out.setdefault(str(ident), {})[e] = Face(str(ident), e, arrays["image"][k], arrays["landmarks"][k],
                                                     arrays["embedding"][k])
        return out
    folders = _identity_folders(root)
    # dlib is single-threaded: one spawned process per core (not forked: the caller may hold Ray's threads)
    with ProcessPoolExecutor(min(2, os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
        found = list(pool.map(_aligned_faces, folders, [size] * len(folders), chunksize=4))
    faces = {d.name: f for d, f in zip(folders, found, strict=True) if f is not None}
    flat = [f for e in faces.values() for f in e.values()]
    np.savez(cache, identity=np.array([f.identity for f in flat]), expression=np.array([f.expression for f in flat]),
             image=np.stack([f.image for f in flat]), landmarks=np.stack([f.landmarks68 for f in flat]),
             embedding=np.stack([f.embedding for f in flat]))
    return faces
