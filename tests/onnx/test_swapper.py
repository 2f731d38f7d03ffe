"""OnnxSwapper on stand-in inswapper / hyperswap / simswap graphs and real London faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from insightface.utils import face_align

from stages.face.backends import build_swapper
from stages.face.expression_regions import DEFAULT_KEEP_REGIONS, region_core, region_mask
from stages.face.types import DetectedFace
from stages.onnx.arcface import l2_normalize
from stages.onnx.swapper import OnnxSwapper, _FaceLike
from stages.onnx.warp import inverse_mask, warp_face

MODELS = ("inswapper_128", "hyperswap_1a_256", "simswap_256")


def _swapper(cfg):
    return build_swapper(cfg.identity_swap, cfg.models)


def _items(faces):
    src_rgb, src_face = faces[0]
    return [(src_rgb, src_face, rgb, face) for rgb, face in faces[2:8]]


@pytest.mark.parametrize("model", MODELS)
def test_batched_equals_unbatched(make_cfg, london_photos, model):
    swapper = _swapper(make_cfg(identity_swap={"backend": "onnx", "model": model}))
    assert isinstance(swapper, OnnxSwapper) and swapper.max_batch > 1
    items = _items(london_photos)
    batched = swapper.swap_batch(items)
    for out, item in zip(batched, items, strict=False):
        single = swapper.swap(*item)
        assert out.shape == item[2].shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - single.astype(int)).max() <= 1
        assert (out != item[2]).any()


@pytest.mark.parametrize("model", ["hyperswap_1a_256", "simswap_256"])
def test_facefusion_paste_back_stays_inside_the_mask(make_cfg, london_photos, model):
    swapper = _swapper(make_cfg(identity_swap={"backend": "onnx", "model": model, "occluder_model": "xseg_3"}))
    for src_rgb, src_face, rgb, face in _items(london_photos):
        out = swapper.swap(src_rgb, src_face, rgb, face)
        mask, matrix = swapper.crop_mask(rgb, face)
        full = inverse_mask(rgb.shape, mask, matrix)
        changed = (out != rgb).any(axis=2)
        assert changed.any() and not (changed & (full == 0)).any()
        assert changed.sum() < 0.5 * changed.size


def test_inswapper_is_insightface_get(make_cfg, london_photos):
    swapper = _swapper(make_cfg(identity_swap={"backend": "onnx", "model": "inswapper_128", "keep_regions": []}))
    src_rgb, src_face, rgb, face = _items(london_photos)[0]
    out = swapper.swap(src_rgb, src_face, rgb, face)
    normed = swapper.embedder.embed(src_rgb, src_face)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    direct = swapper.inswapper.get(bgr, _FaceLike(face.keypoints5), _FaceLike(np.zeros(0), normed), paste_back=True)
    assert np.array_equal(out, direct[:, :, ::-1])
    changed = (out != rgb).any(axis=2)
    assert changed.any() and not (changed & (_insightface_mask(bgr, face.keypoints5) == 0)).any()


def _insightface_mask(bgr, kps):
    """INSwapper.get's blend mask, recomputed: the crop square warped back, eroded, blurred."""
    _, matrix = face_align.norm_crop2(bgr, kps, 128)
    inverse = cv2.invertAffineTransform(matrix)
    white = cv2.warpAffine(np.full((128, 128), 255, np.float32), inverse, (bgr.shape[1], bgr.shape[0]),
                           borderValue=0.0)
    white[white > 20] = 255
    ys, xs = np.where(white == 255)
    size = int(np.sqrt((ys.max() - ys.min()) * (xs.max() - xs.min())))
    k = max(size // 10, 10)
    mask = cv2.erode(white, np.ones((k, k), np.uint8), iterations=1)
    k = max(size // 20, 5)
    return cv2.GaussianBlur(mask, (2 * k + 1, 2 * k + 1), 0)


class _Recorder:
    def __init__(self, session):
        self.session, self.feeds = session, []

    def run(self, names, feeds):
        self.feeds.append(feeds)
        return self.session.run(names, feeds)

    def get_inputs(self):
        return self.session.get_inputs()


def test_hyperswap_inputs_follow_facefusion(make_cfg, london_photos):
    swapper = _swapper(make_cfg(identity_swap={"backend": "onnx", "model": "hyperswap_1a_256"}))
    src_rgb, src_face, rgb, face = _items(london_photos)[0]
    swapper.session = _Recorder(swapper.session)
    swapper.swap(src_rgb, src_face, rgb, face)
    feeds = swapper.session.feeds[0]
    crop, _ = warp_face(np.ascontiguousarray(rgb[:, :, ::-1]), face.keypoints5, "arcface_128", (256, 256))
    expected = ((crop[:, :, ::-1] / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    assert np.allclose(feeds["target"], expected, atol=1e-5)
    assert np.allclose(feeds["source"], swapper.embedder.embed(src_rgb, src_face)[None], atol=1e-6)


def test_simswap_source_goes_through_the_converter(make_cfg, london_photos):
    swapper = _swapper(make_cfg(identity_swap={"backend": "onnx", "model": "simswap_256"}))
    src = london_photos[:3]
    raw = swapper.embedder.raw_batch(src)
    converted = swapper.converter_session.run(None, {"input": raw})[0]
    assert np.allclose(swapper.source_embeddings(src), l2_normalize(converted), atol=1e-6)
    parts = swapper.components
    assert set(parts) == {"simswap_256", "arcface_w600k_r50", "crossface_simswap"}
    assert all(p["hash_override"] for p in parts.values())


def test_region_mask_model_runs(make_cfg, london_photos):
    swapper = _swapper(make_cfg(identity_swap={"backend": "onnx", "model": "hyperswap_1a_256",
                                                    "parser_model": "bisenet_resnet_34", "mask_regions": ["skin"]}))
    out = swapper.swap(*_items(london_photos)[0])
    assert out.shape == london_photos[2][0].shape


@pytest.mark.parametrize("model", ["inswapper_128", "hyperswap_1a_256"])
def test_the_target_keeps_its_expression_regions(make_cfg, london_photos, model):
    """Default keep_regions: the target's (the transfer's) eyes, brows and mouth stay; the rest is the plain swap."""
    keep = _swapper(make_cfg(identity_swap={"backend": "onnx", "model": model}))
    plain = _swapper(make_cfg(identity_swap={"backend": "onnx", "model": model, "keep_regions": []}))
    assert keep.keep_regions == DEFAULT_KEEP_REGIONS and plain.keep_regions == ()
    src_rgb, src_face, rgb, face = _items(london_photos)[1]
    out, bare = keep.swap(src_rgb, src_face, rgb, face), plain.swap(src_rgb, src_face, rgb, face)
    h, w = rgb.shape[:2]
    for region in DEFAULT_KEEP_REGIONS:
        core = region_core(face.landmarks68, region, h, w)
        np.testing.assert_array_equal(out[core], rgb[core])
    eyes = region_core(face.landmarks68, "left-eye", h, w)
    assert (bare[eyes] != rgb[eyes]).any()  # without it the swap replaces the eye
    away = region_mask(face.landmarks68, DEFAULT_KEEP_REGIONS, h, w) == 0
    np.testing.assert_array_equal(out[away], bare[away])
    no_landmarks = DetectedFace(box=face.box, score=face.score, keypoints5=face.keypoints5)
    with pytest.raises(ValueError, match="68 landmarks"):
        keep.swap(src_rgb, src_face, rgb, no_landmarks)
    assert plain.swap(src_rgb, src_face, rgb, no_landmarks).shape == rgb.shape
