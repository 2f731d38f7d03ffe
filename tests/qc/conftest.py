"""The face fixtures (dlib detector/embedder, demo faces) and the London set, detected once, for the QC tests."""

import sys
from pathlib import Path

import pytest

from tests.conftest import LONDON
from tests.face.conftest import demo_face, detector, embedder  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from london_faces import Face, load_london  # noqa: E402


@pytest.fixture(scope="session")
def london_faces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Face]]:
    """identity -> expression -> FFHQ-aligned face, landmarks and dlib embedding (benchmarks/london_faces.py)."""
    return load_london(LONDON, cache=tmp_path_factory.mktemp("london") / "faces.npz")
