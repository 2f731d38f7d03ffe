"""Stand-in ONNX models (built once per session) and real London photos with dlib keypoints."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import PipelineConfig, config_from_dict
from stages.face.types import DetectedFace
from stages.onnx import sessions
from tests.conftest import LONDON
from tests.models.onnx_stand_ins import stand_in_config, write_stand_ins


@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("onnx_models")
    return folder, write_stand_ins(folder)


@pytest.fixture
def make_cfg(stand_ins):
    """A config over the stand-ins: make_cfg(identity_swap={...}, ingest={...}, models={...})."""
    folder, paths = stand_ins

    def make(**sections: dict) -> PipelineConfig:
        data: dict = {"models": stand_in_config(folder, paths)}
        for key, value in sections.items():
            data[key] = {**data.get(key, {}), **value}
        return config_from_dict(data)

    return make


@pytest.fixture(autouse=True)
def _fresh_sessions():
    sessions.clear_cache()
    yield
    sessions.clear_cache()


def read_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


@pytest.fixture(scope="session")
def london_photos() -> list[tuple[np.ndarray, DetectedFace]]:
    """[(RGB photo, its dlib face with 68 landmarks)] for the first 6 London identities, neutral then smiling
    (benchmarks/london_faces.py). Used only to exercise geometry; never to identify anyone."""
    from benchmarks.london_faces import detected_london

    return [pair for _, photos in islice(detected_london(LONDON), 6) for pair in photos.values()]


def pytest_collection_modifyitems(items):
    """insightface's face_align calls a scikit-image API that now warns; not ours to fix."""
    for item in items:
        if "tests/onnx/" in str(item.fspath):
            item.add_marker(pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning"))
