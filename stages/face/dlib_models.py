"""dlib CPU face models: HOG detector + 68-point landmarks (FaceDetector) and the ResNet face embedder
(IdentityEmbedder), with the weights shipped in the `face-recognition-models` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import dlib
import numpy as np

from core.hashing import sha256_file
from stages.config import IngestConfig
from stages.face.types import DetectedFace, keypoints5_from_68

LANDMARKS_68_FILE = "shape_predictor_68_face_landmarks.dat"
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"



def dlib_model_dir() -> Path:
    """The folder of dlib model files from the `face-recognition-models` package (never imported: it needs
    pkg_resources, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dlib model folder not found: the package 'face-recognition-models' is not "
                                "installed (pip install face-recognition-models==0.3.0)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    if not (folder / LANDMARKS_68_FILE).is_file() or not (folder / RECOGNITION_FILE).is_file():
        raise FileNotFoundError(f"dlib model files missing in {folder}: expected {LANDMARKS_68_FILE} and "
                                f"{RECOGNITION_FILE} (reinstall the package 'face-recognition-models')")
    return folder


def _rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def _rect(box: np.ndarray) -> dlib.rectangle:
    x0, y0, x1, y1 = (int(round(float(v))) for v in np.asarray(box).reshape(4))
    return dlib.rectangle(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))


def _shape_points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class DlibDetector:
    """dlib's HOG frontal face detector; each face gets 68 iBUG landmarks from dlib's shape predictor."""

    model_id = "dlib_hog_frontal+shape_predictor_68_face_landmarks"

    def __init__(self, model_dir: Path | None = None, upsample: int = 0, min_score: float = 0.0) -> None:
        folder = Path(model_dir) if model_dir is not None else dlib_model_dir()
        self.landmark_path = folder / LANDMARKS_68_FILE
        if not self.landmark_path.is_file():
            raise FileNotFoundError(f"{self.landmark_path} not found (package 'face-recognition-models')")
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(self.landmark_path))
        self.model_sha256 = sha256_file(self.landmark_path)

    @classmethod
    def from_config(cls, ingest: IngestConfig) -> DlibDetector:
        return cls(upsample=ingest.detector_upsample)

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float32 landmarks for the face in box (x0, y0, x1, y1), from any detector."""
        return _shape_points(self._predictor(_rgb(rgb), _rect(box)))

    def detect_small_faces(self, rgb: np.ndarray) -> list[DetectedFace]:
        """detect() with the image upsampled once more: HOG misses faces under ~80 px at upsample 0, so ingest
        retries with this before saying no_face, and a face found only this way is classed by its size."""
        return self.detect(rgb, self.upsample + 1)

    def detect(self, rgb: np.ndarray, upsample: int | None = None) -> list[DetectedFace]:
        """All frontal faces, highest score first, with box, score, landmarks68 and keypoints5."""
        img = _rgb(rgb)
        rects, scores, _ = self._detector.run(img, self.upsample if upsample is None else upsample, self.min_score)
        faces = []
        for rect, score in zip(rects, scores, strict=False):
            lm = _shape_points(self._predictor(img, rect))
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32)
            faces.append(DetectedFace(box=box, score=float(score), keypoints5=keypoints5_from_68(lm),
                                      landmarks68=lm))
        faces.sort(key=lambda f: -f.score)
        return faces


class DlibEmbedder:
    """dlib's ResNet face recognition model: an L2-normalised 128-d float32 identity vector per face."""

    model_id = "dlib_face_recognition_resnet_model_v1"

    def __init__(self, model_dir: Path | None = None, num_jitters: int = 0) -> None:
        folder = Path(model_dir) if model_dir is not None else dlib_model_dir()
        self.model_path = folder / RECOGNITION_FILE
        self.landmark_path = folder / LANDMARKS_68_FILE
        for p in (self.model_path, self.landmark_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found (package 'face-recognition-models')")
        self.num_jitters = int(num_jitters)
        self._model = dlib.face_recognition_model_v1(str(self.model_path))
        self._predictor: dlib.shape_predictor | None = None  # loaded on first face without landmarks
        self.model_sha256 = sha256_file(self.model_path)

    @classmethod
    def from_config(cls) -> DlibEmbedder:
        return cls()

    def _shape(self, img: np.ndarray, face: DetectedFace) -> dlib.full_object_detection:
        rect = _rect(face.box)
        if face.landmarks68 is None:
            if self._predictor is None:
                self._predictor = dlib.shape_predictor(str(self.landmark_path))
            return self._predictor(img, rect)
        lm = np.asarray(face.landmarks68, dtype=np.float64).reshape(68, 2)
        pts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in lm])
        return dlib.full_object_detection(rect, pts)

    def embed(self, rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        """L2-normalised (128,) float32 embedding; cosine similarity = dot product."""
        img = _rgb(rgb)
        vec = np.asarray(self._model.compute_face_descriptor(img, self._shape(img, face), self.num_jitters),
                         dtype=np.float64)
        norm = np.linalg.norm(vec)
        if not np.isfinite(norm) or norm == 0:
            raise ValueError("dlib returned a zero or non-finite face descriptor")
        return (vec / norm).astype(np.float32)
