"""Learned 7-class facial expression model on CPU: face-api's FaceExpressionNet, converted to ONNX.

The network and its weights are those of the npm package `@vladmandic/face-api` 1.7.15 (MIT; originally
face-api.js by Vincent Mühler), rebuilt as an ONNX graph by `stages/face/expression_net_convert.py` and
committed as `stages/face/weights/face_expression_net.onnx` with the licence beside it. The file's sha256 is
pinned here and checked on load; nothing is downloaded. Equality with face-api's own JavaScript (tfjs CPU
backend) on real faces is a test (`tests/face/test_expression_net.py`).

Input: 112x112 RGB face crops as face-api makes them (`expression_crop`: the landmarks' bounding box padded by
20 %, clipped to the image, zero-padded to a square, bilinear-resized to 112).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

EXPRESSION_CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


def labels_or_predicted(labels: list[str | None], probs: list[list[float] | None]) -> list[str | None]:
    """Corpus expression labels, a missing one replaced by the net's class from its probabilities (None when
    neither exists): the label pairing and the QC self-test both use."""
    return [lab if lab else (EXPRESSION_CLASSES[int(np.argmax(p))] if p else None)
            for lab, p in zip(labels, probs, strict=True)]
INPUT_SIZE = 112

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_FILE = WEIGHTS_DIR / "face_expression_net.onnx"
LICENSE_FILE = WEIGHTS_DIR / "LICENSE-face-api.txt"
MODEL_ID = "face-api-1.7.15/face_expression_net"
MODEL_SHA256 = "6639620041fa93dadfc1315a008b6c9c36e01aa09f36b422ad1fa342f006cd5d"

# face-api's FaceLandmarks.align(): the landmarks' min bounding box padded by 20 % of its width and height.
BOX_PADDING = 0.2


class ExpressionNetFileError(ValueError):
    """The expression-net file is missing or is not the pinned one."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class ExpressionNet:
    """face-api's FaceExpressionNet on onnxruntime (CPU); load once per process/actor (calls are thread-safe)."""

    model_id: str = MODEL_ID
    sha256: str

    def __init__(self, session: ort.InferenceSession, sha256: str, path: Path) -> None:
        self._session = session
        self.sha256 = sha256
        self.path = path

    @classmethod
    def load(cls, path: str | Path | None = None, num_threads: int = 1) -> ExpressionNet:
        """Load the committed model (or `path`, which must be a byte-identical copy: its sha256 is checked)."""
        file = Path(path) if path is not None else MODEL_FILE
        if not file.is_file():
            raise ExpressionNetFileError(
                f"expression-net file not found: {file} (it is committed as {MODEL_FILE}; rebuild it with "
                "`python -m stages.face.expression_net_convert`)")
        digest = _sha256(file)
        if digest != MODEL_SHA256:
            raise ExpressionNetFileError(
                f"expression-net file {file} has sha256 {digest}, expected {MODEL_SHA256}: refusing to load it. "
                f"The file should be the committed {MODEL_FILE} (restore it from git, or rebuild it with "
                "`python -m stages.face.expression_net_convert`)")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = max(1, int(num_threads))
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(file), sess_options=options, providers=["CPUExecutionProvider"])
        return cls(session, digest, file)

    def logits(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB crops (from `expression_crop`) -> (N, 7) float32 logits."""
        arr = np.asarray(crops)
        if arr.ndim != 4 or arr.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3) or arr.dtype != np.uint8:
            raise ValueError(f"expected uint8 crops of shape (N, {INPUT_SIZE}, {INPUT_SIZE}, 3), "
                             f"got {arr.dtype} {arr.shape} (make them with expression_crop)")
        return self._run(arr)

    def _run(self, crops: np.ndarray) -> np.ndarray:
        """Logits of (N, 112, 112, 3) RGB crops in 0..255, any real dtype (face-api itself feeds floats)."""
        if crops.shape[0] == 0:
            return np.zeros((0, len(EXPRESSION_CLASSES)), dtype=np.float32)
        x = np.ascontiguousarray(crops, dtype=np.float32)
        (out,) = self._session.run(["logits"], {"crops": x})
        return np.asarray(out, dtype=np.float32)

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Softmax of `logits`: (N, 7) float32, rows sum to 1, columns in EXPRESSION_CLASSES order."""
        return _softmax(self.logits(crops))


def expression_box(landmarks68: np.ndarray, image_shape: tuple[int, ...],
                   padding: float = BOX_PADDING) -> tuple[int, int, int, int]:
    """(x, y, width, height) of face-api's aligned face box: min bounding box of the landmarks padded by 20 %
    (`padding`, split between both sides), clipped to the image and floored (FaceLandmarks.align +
    Box.clipAtImageBorders)."""
    pts = np.asarray(landmarks68, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] != 68 or not np.isfinite(pts).all():
        raise ValueError(f"expected 68 finite (x, y) landmarks, got {np.asarray(landmarks68).shape}")
    height_img, width_img = int(image_shape[0]), int(image_shape[1])
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    w, h = x1 - x0, y1 - y0
    pad_x, pad_y = w * padding, h * padding  # Box.pad, in its order of operations
    x, y = x0 - pad_x / 2, y0 - pad_y / 2
    right, bottom = x + (w + pad_x), y + (h + pad_y)
    cx, cy = max(x, 0.0), max(y, 0.0)
    cw, ch = min(right - cx, width_img - cx), min(bottom - cy, height_img - cy)
    box = (int(np.floor(cx)), int(np.floor(cy)), int(np.floor(cw)), int(np.floor(ch)))
    if box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"the landmarks' face box {box} lies outside the {width_img}x{height_img} image")
    return box


def _pad_to_square(face: np.ndarray) -> np.ndarray:
    """face-api padToSquare(isCenterImage=true): zeros, round(diff/2) after and the rest before."""
    h, w = face.shape[:2]
    if h == w:
        return face
    diff = abs(h - w)
    after = int(np.floor(diff * 0.5 + 0.5))  # Math.round
    before = diff - after
    pad = ((0, 0), (before, after), (0, 0)) if h > w else ((before, after), (0, 0), (0, 0))
    return np.pad(face, pad)


def _resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """tf.image.resizeBilinear(alignCorners=false, halfPixelCenters=false), computed in float64 like tfjs's CPU
    kernel (JavaScript numbers)."""
    h, w = img.shape[:2]

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(size, dtype=np.float64) * (n_in / size)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(np.ceil(src).astype(np.int64), n_in - 1)
        return lo, hi, src - lo

    ylo, yhi, fy = axis(h)
    xlo, xhi, fx = axis(w)
    fx3 = fx[None, :, None]
    upper, lower = img[ylo], img[yhi]
    top_left, bottom_left = upper[:, xlo], lower[:, xlo]
    top = top_left + (upper[:, xhi] - top_left) * fx3
    bottom = bottom_left + (lower[:, xhi] - bottom_left) * fx3
    return top + (bottom - top) * fy[:, None, None]


def expression_crop_float(image_rgb: np.ndarray, landmarks68: np.ndarray,
                          padding: float = BOX_PADDING) -> np.ndarray:
    """The crop exactly as face-api computes it (float64, 112x112x3, values 0..255, not rounded)."""
    img = np.asarray(image_rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {img.dtype} {img.shape}")
    x, y, w, h = expression_box(landmarks68, img.shape, padding)
    face = _pad_to_square(img[y:y + h, x:x + w].astype(np.float64))
    return _resize_bilinear(face, INPUT_SIZE)


def expression_crop(image_rgb: np.ndarray, landmarks68: np.ndarray, padding: float = BOX_PADDING) -> np.ndarray:
    """112x112x3 uint8 face crop as face-api feeds FaceExpressionNet after withFaceLandmarks(): the aligned box
    (`expression_box`) cut out, zero-padded to a centred square, bilinear-resized to 112, rounded."""
    return np.clip(np.rint(expression_crop_float(image_rgb, landmarks68, padding)), 0, 255).astype(np.uint8)
