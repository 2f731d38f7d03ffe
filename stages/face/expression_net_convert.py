"""Rebuild the committed expression-net ONNX file from face-api's pinned npm tarball (reproducible, offline
once the tarball is at hand).

    python -m stages.face.expression_net_convert [--tarball vladmandic-face-api-1.7.15.tgz] [--out FILE]

Without --tarball it runs `npm pack @vladmandic/face-api@1.7.15` in a temporary folder. The tarball's
sha512 must equal the npm `dist.integrity` pinned here; its `model/face_expression_model-weights_manifest.json`
and `.bin` shard (tfjs format, uint8-quantized filters) are dequantized exactly as tfjs does and laid out as an
ONNX graph that mirrors face-api's FaceExpressionNet (src/faceExpressionNet, src/faceFeatureExtractor,
src/common): mean-RGB subtraction and /255, four dense blocks of 4 (separable) convolutions with TF 'same'
padding, 7x7/2 average pooling, a 256->7 fully connected layer. Outputs `logits` and `probabilities` (softmax).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NPM_PACKAGE = "@vladmandic/face-api"
NPM_VERSION = "1.7.15"
# `npm view @vladmandic/face-api@1.7.15 dist.integrity`
NPM_INTEGRITY = "sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnvrdHTXDw=="
TARBALL_NAME = f"vladmandic-face-api-{NPM_VERSION}.tgz"
MANIFEST_MEMBER = "package/model/face_expression_model-weights_manifest.json"
LICENSE_MEMBER = "package/LICENSE"

INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)  # FaceFeatureExtractor.forwardInput
NUM_CLASSES = 7
OPSET = 13
PRODUCER = f"ciep-factory expression_net_convert from {NPM_PACKAGE}@{NPM_VERSION}"


class ConvertError(RuntimeError):
    """The tarball or its weights are not what this converter was written for."""


def npm_integrity(data: bytes) -> str:
    """npm's `dist.integrity` string (Subresource Integrity, sha512) of a tarball."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def npm_pack(dest: Path) -> Path:
    """Download the pinned tarball with the npm client into dest (needs npm and the npm registry)."""
    npm = shutil.which("npm")
    if npm is None:
        raise ConvertError("npm not found: install Node.js/npm or pass --tarball (the file "
                           f"{TARBALL_NAME} from `npm pack {NPM_PACKAGE}@{NPM_VERSION}`)")
    subprocess.run([npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--silent", "--pack-destination", str(dest)],
                   check=True, stdout=subprocess.DEVNULL)
    path = dest / TARBALL_NAME
    if not path.is_file():
        raise ConvertError(f"npm pack did not write {path}")
    return path


def read_tarball(data: bytes) -> tuple[list[dict], bytes, str]:
    """(weight specs in manifest order, the concatenated weight bytes, LICENSE text) of a verified tarball."""
    got = npm_integrity(data)
    if got != NPM_INTEGRITY:
        raise ConvertError(f"tarball integrity {got} != pinned {NPM_INTEGRITY} ({NPM_PACKAGE}@{NPM_VERSION})")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        def member(name: str) -> bytes:
            fh = tar.extractfile(name)
            if fh is None:
                raise ConvertError(f"{name} missing from the tarball")
            return fh.read()

        manifest = json.loads(member(MANIFEST_MEMBER))
        if len(manifest) != 1:
            raise ConvertError(f"expected one weight group in the manifest, got {len(manifest)}")
        group = manifest[0]
        folder = MANIFEST_MEMBER.rsplit("/", 1)[0]
        shards = b"".join(member(f"{folder}/{p}") for p in group["paths"])
        license_text = member(LICENSE_MEMBER).decode("utf-8")
    return list(group["weights"]), shards, license_text


def dequantize(specs: list[dict], shards: bytes) -> dict[str, np.ndarray]:
    """tfjs `decodeWeights`: uint8 values * scale + min (computed in float64 like JS, stored as float32)."""
    out: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        shape = tuple(int(s) for s in spec["shape"])
        size = int(np.prod(shape))
        if spec["dtype"] != "float32":
            raise ConvertError(f"{spec['name']}: dtype {spec['dtype']} not supported")
        quant = spec.get("quantization")
        if quant is None:
            arr = np.frombuffer(shards, dtype="<f4", count=size, offset=offset).astype(np.float32)
            offset += 4 * size
        else:
            if quant["dtype"] != "uint8":
                raise ConvertError(f"{spec['name']}: quantization {quant['dtype']} not supported")
            q = np.frombuffer(shards, dtype=np.uint8, count=size, offset=offset).astype(np.float64)
            arr = (q * float(quant["scale"]) + float(quant["min"])).astype(np.float32)
            offset += size
        out[spec["name"]] = arr.reshape(shape)
    if offset != len(shards):
        raise ConvertError(f"the weight shards hold {len(shards)} bytes, the manifest describes {offset}")
    return out


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF/tfjs 'same' padding (before, after) along one axis: the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv(self, x: str, name: str, w_hwio: np.ndarray, bias: np.ndarray | None, size: int, stride: int,
             group: int = 1) -> str:
        """tf.conv2d / depthwise conv (filters HWIO, or HW C 1 for depthwise) with 'same' padding."""
        kh, kw = w_hwio.shape[:2]
        if group == 1:
            w = w_hwio.transpose(3, 2, 0, 1)  # (O, I, kh, kw)
        else:
            w = w_hwio.transpose(2, 3, 0, 1)  # (C, 1, kh, kw)
        ph, pw = _same_pads(size, kh, stride), _same_pads(size, kw, stride)
        inputs = [x, self.const(f"{name}/W", w)]
        if bias is not None:
            inputs.append(self.const(f"{name}/B", bias))
        return self.node("Conv", inputs, name, kernel_shape=[kh, kw], strides=[stride, stride], group=group,
                         pads=[ph[0], pw[0], ph[1], pw[1]], dilations=[1, 1])

    def sep_conv(self, x: str, name: str, w: dict[str, np.ndarray], size: int, stride: int) -> str:
        """face-api depthwiseSeparableConv: tf.separableConv2d(x, depthwise, pointwise, stride, 'same') + bias."""
        dw = w[f"{name}/depthwise_filter"]
        mid = self.conv(x, f"{name}/depthwise", dw, None, size, stride, group=dw.shape[2])
        return self.conv(mid, f"{name}/pointwise", w[f"{name}/pointwise_filter"], w[f"{name}/bias"],
                         -(-size // stride), 1)

    def dense_block4(self, x: str, name: str, w: dict[str, np.ndarray], size: int, first: bool) -> tuple[str, int]:
        """face-api denseBlock4 (isScaleDown): the additions in the reference's order."""
        if first:
            c0 = self.conv(x, f"{name}/conv0", w[f"{name}/conv0/filters"], w[f"{name}/conv0/bias"], size, 2)
        else:
            c0 = self.sep_conv(x, f"{name}/conv0", w, size, 2)
        size = -(-size // 2)
        out1 = self.node("Relu", [c0], f"{name}/out1")
        out2 = self.sep_conv(out1, f"{name}/conv1", w, size, 1)
        in3 = self.node("Relu", [self.node("Add", [out1, out2], f"{name}/sum3")], f"{name}/in3")
        out3 = self.sep_conv(in3, f"{name}/conv2", w, size, 1)
        s23 = self.node("Add", [out2, out3], f"{name}/sum23")
        in4 = self.node("Relu", [self.node("Add", [out1, s23], f"{name}/sum4")], f"{name}/in4")
        out4 = self.sep_conv(in4, f"{name}/conv3", w, size, 1)
        s34 = self.node("Add", [out3, out4], f"{name}/sum34")
        s234 = self.node("Add", [out2, s34], f"{name}/sum234")
        out = self.node("Relu", [self.node("Add", [out1, s234], f"{name}/sum_out")], f"{name}/out")
        return out, size


class _Weights(dict[str, np.ndarray]):
    """The source weights; remembers which were read, so none is silently left out of the graph."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__(weights)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> np.ndarray:
        self.read.add(key)
        return super().__getitem__(key)


def build_onnx(source: dict[str, np.ndarray], license_text: str) -> onnx.ModelProto:
    """FaceExpressionNet as ONNX: input `crops` float32 (N, 112, 112, 3) RGB in 0..255 -> logits, probabilities."""
    weights = _Weights(source)
    g = _Graph()
    mean = g.const("mean_rgb", np.array(MEAN_RGB, dtype=np.float32).reshape(1, 1, 1, 3))
    scale = g.const("scale_255", np.array(255.0, dtype=np.float32))
    x = g.node("Sub", ["crops", mean], "normalize/sub")
    x = g.node("Div", [x, scale], "normalize/div")
    x = g.node("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
    size = INPUT_SIZE
    for i in range(4):
        x, size = g.dense_block4(x, f"dense{i}", weights, size, first=(i == 0))
    if size != 7:
        raise ConvertError(f"unexpected feature map size {size}")
    x = g.node("AveragePool", [x], "avg_pool", kernel_shape=[7, 7], strides=[2, 2])
    x = g.node("Flatten", [x], "features", axis=1)
    fc_w, fc_b = weights["fc/weights"], weights["fc/bias"]
    if fc_w.shape != (256, NUM_CLASSES):
        raise ConvertError(f"fc/weights shape {fc_w.shape}, expected (256, {NUM_CLASSES})")
    g.node("Gemm", [x, g.const("fc/weights", fc_w), g.const("fc/bias", fc_b)], "logits")
    g.node("Softmax", ["logits"], "probabilities", axis=1)
    unused = sorted(set(weights) - weights.read)
    if unused:
        raise ConvertError(f"weights not used by the graph: {unused}")
    graph = helper.make_graph(
        g.nodes, "face_expression_net",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["N", INPUT_SIZE, INPUT_SIZE, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", NUM_CLASSES])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER,
                              producer_version=NPM_VERSION, ir_version=8)
    model.doc_string = ("face-api FaceExpressionNet (7 classes: neutral, happy, sad, angry, fearful, disgusted, "
                        f"surprised), weights from npm {NPM_PACKAGE}@{NPM_VERSION} ({NPM_INTEGRITY}), MIT licence.")
    helper.set_model_props(model, {"source": f"npm:{NPM_PACKAGE}@{NPM_VERSION}", "integrity": NPM_INTEGRITY,
                                   "classes": "neutral,happy,sad,angry,fearful,disgusted,surprised",
                                   "license": license_text})
    onnx.checker.check_model(model)
    return model


def convert(tarball: bytes) -> tuple[bytes, str]:
    """(serialized ONNX model, LICENSE text) from the pinned tarball's bytes."""
    specs, shards, license_text = read_tarball(tarball)
    model = build_onnx(dequantize(specs, shards), license_text)
    return model.SerializeToString(), license_text


def main(argv: list[str] | None = None) -> int:
    from stages.face.expression_net import LICENSE_FILE, MODEL_FILE

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tarball", type=Path, help=f"{TARBALL_NAME} (default: npm pack it)")
    ap.add_argument("--out", type=Path, default=MODEL_FILE, help="ONNX file to write (default: %(default)s)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball if args.tarball is not None else npm_pack(Path(tmp))
        data, license_text = convert(tarball.read_bytes())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    if args.out.resolve() == MODEL_FILE.resolve():
        LICENSE_FILE.write_text(license_text)
    sys.stdout.write(f"{args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
