"""Fixtures for the CPU face backends: one dlib detector/embedder per session, demo-corpus faces."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from stages.face.align import AlignedFace, ffhq_align
from stages.face.image_io import decode_image
from stages.face.types import DetectedFace
from tests.conftest import DEMO_CORPUS, london_identities


@pytest.fixture(scope="session")
def detector():
    from stages.face.dlib_models import DlibDetector
    return DlibDetector()


@pytest.fixture(scope="session")
def embedder():
    from stages.face.dlib_models import DlibEmbedder
    return DlibEmbedder()


@cache
def demo_rgb(identity: str, expression: str) -> np.ndarray:
    """A real demo-corpus photo, decoded (read-only: copy before editing)."""
    rgb = decode_image((DEMO_CORPUS / identity / f"{expression}.jpg").read_bytes(), 40_000_000)
    rgb.setflags(write=False)
    return rgb


@pytest.fixture(scope="session")
def demo_face(detector):
    """(identity, expression) -> (rgb, the one DetectedFace, AlignedFace at 256 px), cached."""
    cache: dict[tuple[str, str], tuple[np.ndarray, DetectedFace, AlignedFace]] = {}

    def get(identity: str, expression: str) -> tuple[np.ndarray, DetectedFace, AlignedFace]:
        key = (identity, expression)
        if key not in cache:
            rgb = demo_rgb(identity, expression)
            faces = detector.detect(rgb)
            assert len(faces) == 1, (key, len(faces))
            cache[key] = (rgb, faces[0], ffhq_align(rgb, faces[0].landmarks68, 256))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def demo_ids() -> list[str]:
    return london_identities()
