"""Helpers shared by the E-Adapter tests: fake landmarks, a toy identity embedder, demo triples and requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.face.protocols import TransferRequest
from stages.face.types import DetectedFace

__all__ = ["fake_landmarks", "toy_embedder", "demo_triples", "make_requests", "DEMO_CORPUS"]

DEMO_CORPUS = Path(__file__).resolve().parents[2] / "data" / "demo_corpus"


def fake_landmarks(size: int) -> np.ndarray:
    """68 plausible iBUG points for a centred, aligned face in a size x size crop."""
    c, r = size / 2, size * 0.36
    jaw = [(c + r * np.cos(a), size * 0.5 + r * 1.1 * np.sin(a)) for a in np.linspace(np.pi, 0, 17)[::-1]]
    jaw = [(x, y) for x, y in jaw]
    inner = [(c + r * 0.6 * np.cos(a), size * 0.45 + r * 0.6 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 51)]
    return np.asarray(jaw + inner, np.float32)


def toy_embedder(rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
    """A deterministic 128-d stand-in for a face-recognition embedding: a 16x8 grey thumbnail of the face box."""
    import cv2

    x0, y0, x1, y1 = (int(round(v)) for v in face.box)
    crop = rgb[max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)]
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    vec = cv2.resize(grey, (8, 16), interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1) - 128.0
    return vec / (np.linalg.norm(vec) + 1e-6)


def load_face(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))


def demo_triples(n: int = 4, refined: bool = False) -> list[dict]:
    """{S: neutral, T: smiling} of identity i; R = smiling of identity i+1 (refined) - London set, paths only."""
    ids = sorted(p.name for p in DEMO_CORPUS.iterdir() if p.is_dir())[: n + 1]
    rows = []
    for k, ident in enumerate(ids[:n]):
        s, t = DEMO_CORPUS / ident / "neutral.jpg", DEMO_CORPUS / ident / "smiling.jpg"
        emb = toy_embedder(load_face(s, 64), DetectedFace(np.array([8, 8, 56, 60], np.float32), 1.0,
                                                          np.zeros((5, 2), np.float32)))
        row = {"s_path": str(s), "t_path": str(t), "s_embedding": emb.tolist()}
        if refined:
            row["r_path"] = str(DEMO_CORPUS / ids[k + 1] / "smiling.jpg")
        rows.append(row)
    return rows


def make_requests(n: int, size: int = 96, seed0: int = 0) -> list[TransferRequest]:
    """TransferRequests built from the demo corpus at `size` px, with fake landmarks."""
    ids = sorted(p.name for p in DEMO_CORPUS.iterdir() if p.is_dir())
    lm = fake_landmarks(size)
    reqs = []
    for k in range(n):
        carrier = load_face(DEMO_CORPUS / ids[k] / "neutral.jpg", size)
        target = load_face(DEMO_CORPUS / ids[k + 1] / "smiling.jpg", size)
        reqs.append(TransferRequest(carrier_rgb=carrier, carrier_landmarks=lm, source_landmarks=lm, target_rgb=target,
                                    target_landmarks=lm, seed=seed0 + k))
    return reqs
