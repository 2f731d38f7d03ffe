"""ScrfdDetector: insightface SCRFD decoding on a det_10g-shaped stand-in; 68 landmarks from dlib on its box."""

from __future__ import annotations

import cv2
import numpy as np

from core.hashing import sha256_file
from pipeline.config import config_from_dict
from stages.face.backends import build_detector
from stages.onnx.model_files import resolve_model
from stages.onnx.scrfd import ScrfdDetector
from tests.conftest import DEMO_CORPUS
from tests.models.onnx_stand_ins import build_scrfd
from tests.onnx.conftest import read_rgb

CPU = ["CPUExecutionProvider"]


def _marker_image(h: int, w: int, x: int, y: int, side: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[y:y + side, x:x + side] = (255, 0, 0)  # red in RGB
    return img


def test_boxes_and_keypoints_in_image_pixels(make_cfg):
    calls = []
    cfg = make_cfg(ingest={"detector": "scrfd", "scrfd_model": "scrfd_10g"})
    det = ScrfdDetector(resolve_model(cfg.models, "scrfd_10g"), CPU,
                        landmarker=lambda rgb, box: calls.append((rgb, box)) or np.zeros((68, 2)))
    # 640x480 frame, no resize: the red stride-32 cell at (320, 224) is anchor (320, 224)
    faces = det.detect(_marker_image(480, 640, 320, 224, 32))
    assert len(faces) == 1
    f = faces[0]
    assert np.allclose(f.box, [256, 160, 384, 288], atol=0.5) and f.score > 0.9
    assert np.allclose(f.keypoints5, [[304, 208], [336, 208], [320, 224], [307.2, 240], [332.8, 240]], atol=0.5)
    assert f.landmarks68.shape == (68, 2) and len(calls) == 1 and np.allclose(calls[0][1], f.box)
    # 2x larger frame: letterboxed by 1/2, results mapped back to the frame
    faces = det.detect(_marker_image(960, 1280, 640, 448, 64))
    assert len(faces) == 1 and np.allclose(faces[0].box, [512, 320, 768, 576], atol=1)
    assert det.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert det.detect(_marker_image(480, 640, 320, 224, 32)[:, :, ::-1].copy()) == []  # blue: wrong channel order


def test_from_config_fills_landmarks68_with_dlib(tmp_path):
    from stages.face.dlib_models import DlibDetector

    rgb = cv2.resize(read_rgb(DEMO_CORPUS / "001" / "neutral.jpg"), (640, 640), interpolation=cv2.INTER_AREA)
    ref = max(DlibDetector().detect(rgb), key=lambda f: f.short_side)
    x0, y0, x1, y1 = ref.box
    cx, cy = int((x0 - 48) // 32 * 32), int((y0 - 48) // 32 * 32)  # a marker cell above-left of the face
    assert cx >= 0 and cy >= 0
    path = build_scrfd(tmp_path / "det_10g.onnx", box_cells=((cx - x0) / 32, (cy - y0) / 32,
                                                             (x1 - cx) / 32, (y1 - cy) / 32))
    cfg = config_from_dict({"models": {"root": str(tmp_path), "providers": CPU,
                                       "hash_overrides": {"scrfd_10g": sha256_file(path)}},
                            "ingest": {"detector": "scrfd", "scrfd_model": "scrfd_10g"}})
    det = build_detector(cfg.ingest, cfg.models)
    assert isinstance(det, ScrfdDetector)
    marked = rgb.copy()
    marked[cy:cy + 32, cx:cx + 32] = (255, 0, 0)
    faces = det.detect(marked)
    assert len(faces) == 1
    assert np.allclose(faces[0].box, ref.box, atol=1)
    assert np.abs(faces[0].landmarks68 - ref.landmarks68).mean() < 1.0
