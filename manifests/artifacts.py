"""Image files of a run (aligned crops, transfers, references), content-hashed, through fsspec."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from core.location import Location
from manifests.store import atomic_write_bytes


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def rgb_from_png(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError("not a decodable image")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


class ArtifactStore:
    """Writes `<run>/images/<kind>/<id>.png`; rewriting the same id with the same pixels is a no-op."""

    def __init__(self, run: Location | str) -> None:
        self.run = Location.of(run)
        self.fs, self.root = self.run.fs, self.run.path

    def put(self, kind: str, item_id: str, rgb: np.ndarray) -> tuple[str, str]:
        """Store an image; returns (url, sha256 of the file bytes)."""
        data = png_bytes(rgb)
        path = f"{self.root}/images/{kind}/{item_id}.png"
        atomic_write_bytes(self.fs, path, data)
        return self.run.full_url(path), hashlib.sha256(data).hexdigest()

    def get(self, url: str) -> np.ndarray:
        with self.run.open_url(url) as fh:
            return rgb_from_png(fh.read())
