"""Providers fall back to CPU, one session per model file, insightface routes each stand-in correctly."""

from __future__ import annotations

import numpy as np
import onnx
from insightface.model_zoo import get_model
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.inswapper import INSwapper
from insightface.model_zoo.scrfd import SCRFD
from onnx import numpy_helper

from stages.onnx import sessions
from stages.onnx.arcface import ArcFaceEmbedder


def test_provider_filtering():
    assert sessions.resolve_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                                      available=["CUDAExecutionProvider", "CPUExecutionProvider"]) == \
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert sessions.resolve_providers(["CUDAExecutionProvider"], available=["CPUExecutionProvider"]) == \
        ["CPUExecutionProvider"]


def test_cuda_request_falls_back_to_cpu_here(make_cfg):
    cfg = make_cfg(models={"providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]})
    emb = ArcFaceEmbedder.from_config(cfg.models)
    assert emb.model.session.get_providers() == ["CPUExecutionProvider"]


def test_one_session_per_model(stand_ins):
    _, paths = stand_ins
    a = sessions.get_session(paths["crossface_simswap"], ["CPUExecutionProvider"])
    assert sessions.get_session(paths["crossface_simswap"], ["CPUExecutionProvider"]) is a
    m = sessions.get_insightface_model(paths["arcface_w600k_r50"], ["CPUExecutionProvider"], ArcFaceONNX)
    assert sessions.get_insightface_model(paths["arcface_w600k_r50"], ["CPUExecutionProvider"], ArcFaceONNX) is m
    assert sessions.get_session(paths["arcface_w600k_r50"], ["CPUExecutionProvider"]) is m.session


def test_insightface_routes_each_stand_in(stand_ins):
    _, paths = stand_ins
    cpu = ["CPUExecutionProvider"]
    assert isinstance(get_model(str(paths["arcface_w600k_r50"]), providers=cpu), ArcFaceONNX)
    det = get_model(str(paths["scrfd_10g"]), providers=cpu)
    assert isinstance(det, SCRFD) and det.use_kps and det.fmc == 3 and det._num_anchors == 2
    swapper = sessions.get_insightface_model(paths["inswapper_128"], cpu, INSwapper)
    assert swapper.input_names == ["target", "source"] and swapper.input_size == (128, 128)
    last = onnx.load(str(paths["inswapper_128"])).graph.initializer[-1]
    assert last.name == "emap" and np.array_equal(swapper.emap, numpy_helper.to_array(last))
    assert swapper.emap.shape == (512, 512)
