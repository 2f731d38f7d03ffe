"""ArcFaceEmbedder: insightface ArcFaceONNX + norm_crop, L2-normalised, batched == one by one."""

from __future__ import annotations

import numpy as np

from stages.face.backends import build_embedder
from stages.onnx.arcface import ArcFaceEmbedder


def test_batched_equals_unbatched_and_normalised(make_cfg, london_photos):
    emb = ArcFaceEmbedder.from_config(make_cfg().models, "arcface_w600k_r50")
    batch = emb.embed_batch(london_photos)
    assert batch.shape == (len(london_photos), 512) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1, atol=1e-5)
    single = np.stack([emb.embed(rgb, face) for rgb, face in london_photos])
    assert np.allclose(batch, single, atol=1e-5)
    assert emb.max_batch > 1  # the stand-in has a dynamic batch axis, so one call served them all


def test_built_from_config_through_backends(make_cfg):
    cfg = make_cfg(qc={"identity": {"backend": "arcface", "model": "arcface_w600k_r50"}})
    emb = build_embedder(cfg.qc.identity, cfg.models)
    assert isinstance(emb, ArcFaceEmbedder)
    assert emb.model_id == "arcface_w600k_r50" and emb.hash_override and len(emb.model_sha256) == 64


def test_align_is_insightface_norm_crop(make_cfg, london_photos):
    from insightface.utils import face_align
    emb = ArcFaceEmbedder.from_config(make_cfg().models)
    rgb, face = london_photos[0]
    expected = face_align.norm_crop(np.ascontiguousarray(rgb[:, :, ::-1]), face.keypoints5, 112)
    assert np.array_equal(emb.align(rgb, face), expected)
