"""The model table is consistent and its templates agree with insightface's alignment."""

from __future__ import annotations

import re

import numpy as np
from insightface.utils import face_align

from stages.onnx.registry import REGISTRY, TEMPLATES, get_spec, template_points


def test_entries_are_consistent():
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.files
        for f in spec.files:
            assert f.file_name.endswith(".onnx") and f.source
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256), (name, f.sha256)
        if spec.kind in ("swapper", "embedder"):
            assert spec.template in TEMPLATES
        if spec.kind == "swapper":
            assert get_spec(spec.embedder).kind == "embedder"
            assert spec.source_embedding is not None and spec.swap_type is not None
            if spec.source_embedding == "converted_normed":
                assert get_spec(spec.converter).kind == "converter"


def test_required_models_are_listed():
    for name in ("inswapper_128", "inswapper_128_fp16", "hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256",
                 "simswap_256", "crossface_simswap", "arcface_w600k_r50", "arcface_glintr100", "scrfd_10g"):
        assert name in REGISTRY
    assert get_spec("hyperswap_1b_256").template == "arcface_128"
    assert get_spec("simswap_256").template == "arcface_112_v1"


def test_templates_match_insightface():
    # insightface aligns ArcFace inputs to arcface_dst at 112 px, and inswapper's 128 px crop shifts it by 8 px.
    assert np.allclose(template_points("arcface_112_v2", (112, 112)), face_align.arcface_dst, atol=1e-3)
    assert np.allclose(template_points("arcface_128", (128, 128)), face_align.arcface_dst + [8, 0], atol=1e-3)


def test_unknown_name_lists_the_registry():
    try:
        get_spec("nope")
    except KeyError as err:
        assert "inswapper_128" in str(err)
    else:
        raise AssertionError("expected KeyError")
