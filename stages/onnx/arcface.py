"""ArcFace identity embeddings through insightface's ArcFaceONNX (w600k_r50, glintr100), batched over faces."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.utils import face_align

from stages.config import ModelsConfig
from stages.face.types import DetectedFace
from stages.onnx.model_files import ResolvedModel, resolve_model
from stages.onnx.sessions import batch_dim_is_dynamic, get_insightface_model, resolve_providers

DEFAULT_MODEL = "arcface_w600k_r50"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("cannot normalise a zero embedding")
    return x / norm


class ArcFaceEmbedder:
    """IdentityEmbedder on an insightface ArcFace ONNX file; faces are aligned with `face_align.norm_crop`."""

    def __init__(self, resolved: ResolvedModel, providers: Sequence[str], max_batch: int = 64) -> None:
        self.resolved = resolved
        self.model_id = resolved.name
        self.model_sha256 = resolved.sha256
        self.hash_override = resolved.hash_override
        self.model: ArcFaceONNX = get_insightface_model(resolved.path, providers, ArcFaceONNX)
        self.crop_size = int(self.model.input_size[0])
        self.max_batch = max_batch if batch_dim_is_dynamic(self.model.session) else 1

    @classmethod
    def from_config(cls, models: ModelsConfig, model: str | None = None) -> ArcFaceEmbedder:
        """The embedder named by `model` (e.g. qc.identity.model), else arcface_w600k_r50."""
        name = model or DEFAULT_MODEL
        return cls(resolve_model(models, name), resolve_providers(models.providers))

    def align(self, rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        """The BGR crop the network sees (insightface arcface_112_v2 template, least-squares similarity)."""
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        return face_align.norm_crop(bgr, landmark=np.asarray(face.keypoints5, np.float32), image_size=self.crop_size)

    def raw_batch(self, items: Sequence[tuple[np.ndarray, DetectedFace]]) -> np.ndarray:
        """Un-normalised embeddings (N, D) float32, as the network outputs them."""
        crops = [self.align(rgb, face) for rgb, face in items]
        if not crops:
            return np.zeros((0, 512), np.float32)
        outs = [self.model.get_feat(crops[i:i + self.max_batch]) for i in range(0, len(crops), self.max_batch)]
        return np.concatenate(outs, axis=0).astype(np.float32)

    def embed_batch(self, items: Sequence[tuple[np.ndarray, DetectedFace]]) -> np.ndarray:
        """L2-normalised embeddings (N, D) float32, one network call per `max_batch` faces."""
        raw = self.raw_batch(items)
        return l2_normalize(raw) if len(raw) else raw

    def embed(self, rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        return self.embed_batch([(rgb, face)])[0]
