"""The learned expression model (face-api's FaceExpressionNet as ONNX): equality with face-api's own JavaScript
on real faces, the pinned file, the converter, the crop."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from stages.face.expression_net import (
    EXPRESSION_CLASSES,
    MODEL_FILE,
    MODEL_SHA256,
    ExpressionNet,
    ExpressionNetFileError,
    _softmax,
    expression_box,
    expression_crop,
    expression_crop_float,
)
from tests.face.conftest import demo_rgb
from tests.face.faceapi_reference import FIXTURE, ReferenceImage, ReferenceUnavailable, run_reference
from tests.prerequisites import missing

# Measured (onnxruntime CPU vs face-api 1.7.15 on tfjs 4.22.0's CPU backend, same uint8 crops, real faces):
# max |logit difference| 1.1e-5 (logits range about -18..10), max |probability difference| 1.2e-7. The bounds
# leave room for other float summation orders (CPU kernels, thread counts), not for a wrong layer.
MAX_LOGIT_DIFF = 1e-4
MAX_PROB_DIFF = 1e-5
# face-api's own crop path feeds the float resize to the net. From the unrounded crop (expression_crop_float)
# we match it to float precision; expression_crop's uint8 rounding moves probabilities by up to 0.018 on the
# demo corpus (measured), on faces whose two top classes are close.
MAX_PIPELINE_PROB_DIFF = 1e-4
MAX_ROUNDING_PROB_DIFF = 0.05


@pytest.fixture(scope="module")
def net() -> ExpressionNet:
    return ExpressionNet.load()


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def test_classes_match_faceapi_order(fixture):
    assert EXPRESSION_CLASSES == ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
    assert "@vladmandic/face-api@1.7.15" in str(fixture["source"])


def test_equals_committed_faceapi_outputs(net, fixture):
    """Runs without node: face-api's outputs on real crops, stored by `python -m tests.face.faceapi_reference`."""
    logits = net.logits(fixture["crops"])
    probs = net.probabilities(fixture["crops"])
    assert logits.shape == (len(fixture["names"]), 7) and logits.dtype == np.float32
    logit_diff = float(np.abs(logits - fixture["logits"]).max())
    prob_diff = float(np.abs(probs - fixture["probabilities"]).max())
    assert logit_diff < MAX_LOGIT_DIFF, logit_diff
    assert prob_diff < MAX_PROB_DIFF, prob_diff
    assert np.array_equal(probs.argmax(1), fixture["probabilities"].argmax(1))


def test_fixture_crops_are_expression_crop(fixture):
    """expression_crop reproduces the stored crops bit for bit, and face-api's box from the same landmarks."""
    for name, crop, lm, box in zip(fixture["names"], fixture["crops"], fixture["landmarks"],
                                   fixture["pipeline_boxes"], strict=True):
        ident, expr = str(name).split("/")
        rgb = demo_rgb(ident, expr)
        assert expression_box(lm, rgb.shape) == tuple(int(v) for v in box), name
        assert np.array_equal(expression_crop(rgb, lm), crop), name


def test_smiles_score_happy(net, fixture):
    probs = net.probabilities(fixture["crops"])
    happy = EXPRESSION_CLASSES.index("happy")
    for k, name in enumerate(fixture["names"]):
        top = EXPRESSION_CLASSES[int(probs[k].argmax())]
        assert top == ("happy" if str(name).endswith("smiling") else "neutral"), (name, probs[k])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert probs[:, happy].min() >= 0.0


def _border_case(rgb: np.ndarray, lm: np.ndarray) -> ReferenceImage:
    """The face cut at its nose: the box runs off the image (clipping) and the crop is far from square."""
    cut = int(lm[30, 0])
    return ReferenceImage(np.ascontiguousarray(rgb[:, :cut]), lm)


def test_equals_faceapi_javascript(net, detector, demo_ids):
    """face-api's own JS (npm, pinned, tfjs CPU backend) on 8 demo-corpus faces not in the fixture (plus two cut
    at the nose): same crops -> same logits; and face-api's whole crop path (align, extractFaceTensors,
    padToSquare, resizeBilinear) from the same landmarks -> same box and probabilities as expression_crop."""
    fixture_ids = {str(n).split("/")[0] for n in np.load(FIXTURE)["names"]}
    images = []
    for ident in [i for i in demo_ids if i not in fixture_ids][:4]:
        for expr in ("neutral", "smiling"):
            rgb = demo_rgb(ident, expr)
            (face,) = detector.detect(rgb)
            images.append(ReferenceImage(rgb, face.landmarks68))
    images.append(_border_case(images[0].rgb, images[0].landmarks68))
    images.append(_border_case(images[3].rgb, images[3].landmarks68))
    crops = np.stack([expression_crop(im.rgb, im.landmarks68) for im in images])
    try:
        ref = run_reference(crops, images)
    except ReferenceUnavailable as err:
        missing(f"face-api reference (node, npm and the npm registry) not runnable here: {err}")
    assert ref["backend"] == "cpu" and ref["faceapi_version"] == "1.7.15"
    logits = net.logits(crops)
    probs = net.probabilities(crops)
    logit_diff = float(np.abs(logits - ref["logits"]).max())
    prob_diff = float(np.abs(probs - ref["probabilities"]).max())
    assert logit_diff < MAX_LOGIT_DIFF, logit_diff
    assert prob_diff < MAX_PROB_DIFF, prob_diff
    float_crops = np.stack([expression_crop_float(im.rgb, im.landmarks68) for im in images])
    float_probs = _softmax(net._run(float_crops))
    pipeline = np.array([got["probabilities"] for got in ref["images"]], np.float32)
    for im, got in zip(images, ref["images"], strict=True):
        assert expression_box(im.landmarks68, im.rgb.shape) == tuple(got["box"])
    pipeline_diff = float(np.abs(float_probs - pipeline).max())
    rounding_diff = float(np.abs(probs - pipeline).max())
    assert pipeline_diff < MAX_PIPELINE_PROB_DIFF, pipeline_diff
    assert rounding_diff < MAX_ROUNDING_PROB_DIFF, rounding_diff


def test_load_verifies_sha256(tmp_path):
    assert hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest() == MODEL_SHA256
    net = ExpressionNet.load()
    assert net.sha256 == MODEL_SHA256 and net.model_id == "face-api-1.7.15/face_expression_net"
    copy = tmp_path / "copy.onnx"
    shutil.copy2(MODEL_FILE, copy)
    assert ExpressionNet.load(copy).sha256 == MODEL_SHA256
    data = bytearray(MODEL_FILE.read_bytes())
    data[-100] ^= 0x01
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(bytes(data))
    with pytest.raises(ExpressionNetFileError) as err:
        ExpressionNet.load(tampered)
    assert str(tampered) in str(err.value) and str(MODEL_FILE) in str(err.value) and MODEL_SHA256 in str(err.value)
    with pytest.raises(ExpressionNetFileError, match="not found"):
        ExpressionNet.load(tmp_path / "missing.onnx")


def test_bad_crops_are_refused(net):
    assert net.logits(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 7)
    assert net.probabilities(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 7)
    for bad in (np.zeros((112, 112, 3), np.uint8), np.zeros((1, 112, 112, 3), np.float32),
                np.zeros((1, 128, 128, 3), np.uint8), np.zeros((1, 112, 112, 4), np.uint8)):
        with pytest.raises(ValueError, match="expression_crop"):
            net.logits(bad)


def test_batch_equals_single(net, fixture):
    crops = fixture["crops"]
    batch = net.logits(crops)
    single = np.concatenate([net.logits(crops[k:k + 1]) for k in range(len(crops))])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_expression_crop_edges():
    rgb = np.full((100, 80, 3), 200, np.uint8)
    lm = np.stack(np.meshgrid(np.linspace(-20, 60, 17), np.linspace(10, 130, 4)), -1).reshape(-1, 2)[:68]
    box = expression_box(lm, rgb.shape)
    assert box[0] == 0 and box[1] == 0 and box[2] <= 80 and box[3] <= 100
    crop = expression_crop(rgb, lm)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    # the box is taller than wide: zero (black) padding left and right, the image in the middle
    assert crop[:, 0].max() == 0 and crop[:, -1].max() == 0 and crop[56, 56, 0] == 200
    with pytest.raises(ValueError, match="outside"):
        expression_crop(rgb, lm + 1000)
    with pytest.raises(ValueError, match="68"):
        expression_crop(rgb, lm[:5])
    with pytest.raises(ValueError, match="finite"):
        expression_crop(rgb, np.full((68, 2), np.nan))
    with pytest.raises(ValueError, match="uint8"):
        expression_crop(rgb.astype(np.float32), lm)
