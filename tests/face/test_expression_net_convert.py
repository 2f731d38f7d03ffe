"""The converter rebuilds the committed expression-net file bit for bit from face-api's pinned npm tarball."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest

from stages.face.expression_net import LICENSE_FILE, MODEL_FILE, MODEL_SHA256
from stages.face.expression_net_convert import (
    NPM_INTEGRITY,
    NPM_PACKAGE,
    NPM_VERSION,
    ConvertError,
    _same_pads,
    convert,
    dequantize,
    npm_integrity,
    npm_pack,
)
from tests.prerequisites import missing, require


def test_rebuild_from_pinned_npm_tarball(tmp_path):
    require(shutil.which("npm"), "npm not on PATH: the rebuild needs the npm client and the npm registry (the "
            "committed file is still verified by test_expression_net.py)")
    try:
        tarball = npm_pack(tmp_path).read_bytes()
    except subprocess.CalledProcessError as err:  # the registry cannot be reached from here
        missing(f"`npm pack {NPM_PACKAGE}@{NPM_VERSION}` failed (exit {err.returncode}): no npm registry here?")
    assert npm_integrity(tarball) == NPM_INTEGRITY
    data, license_text = convert(tarball)
    assert hashlib.sha256(data).hexdigest() == MODEL_SHA256
    assert data == MODEL_FILE.read_bytes()
    assert license_text == LICENSE_FILE.read_text() and "MIT License" in license_text

    # any other tarball (here: one byte changed) is refused before anything is read from it
    tampered = bytearray(tarball)
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(ConvertError, match="integrity"):
        convert(bytes(tampered))


def test_tfjs_same_padding():
    assert _same_pads(112, 3, 2) == (0, 1)  # the extra row/column goes after, as in TF
    assert _same_pads(56, 3, 2) == (0, 1)
    assert _same_pads(7, 3, 1) == (1, 1)
    assert _same_pads(7, 3, 2) == (1, 1)


def test_dequantize_like_tfjs():
    q = np.array([0, 1, 255, 7], np.uint8)
    raw = np.array([0.5, -2.25], np.float32)
    specs: list[dict[str, Any]] = [{"name": "a", "shape": [2, 2], "dtype": "float32",
              "quantization": {"dtype": "uint8", "scale": 0.01, "min": -1.0}},
             {"name": "b", "shape": [2], "dtype": "float32"}]
    out = dequantize(specs, q.tobytes() + raw.tobytes())
    np.testing.assert_array_equal(out["a"], (q.astype(np.float64) * 0.01 - 1.0).astype(np.float32).reshape(2, 2))
    np.testing.assert_array_equal(out["b"], raw)
    with pytest.raises(ConvertError, match="bytes"):
        dequantize(specs, q.tobytes() + raw.tobytes() + b"\0")
    with pytest.raises(ConvertError, match="not supported"):
        dequantize([{"name": "c", "shape": [1], "dtype": "int32"}], b"\0\0\0\0")
