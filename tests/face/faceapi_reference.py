"""Run face-api's own JavaScript FaceExpressionNet (the reference for stages/face/expression_net.py).

The pinned npm packages (`faceapi_reference/package.json` + `package-lock.json`: @vladmandic/face-api 1.7.15,
@tensorflow/tfjs 4.22.0, integrity-checked by `npm ci`) are installed once into
$CIEP_CACHE_DIR/faceapi-reference-<lock hash> (default ~/.cache/ciep), outside the repo; `run.cjs` runs the
network on the tfjs pure-JS CPU backend.

    python -m tests.face.faceapi_reference --write-fixture   # rewrites tests/face/fixtures/expression_net_reference.npz

The fixture keeps a few real crops (demo corpus, London set, CC BY 4.0) with face-api's outputs, so the
equality check still runs where node is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.face.expression_net_convert import NPM_INTEGRITY, NPM_PACKAGE, NPM_VERSION

HARNESS = Path(__file__).resolve().parent / "faceapi_reference"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "expression_net_reference.npz"
# (identity, expression) of the demo-corpus faces kept in the fixture
FIXTURE_FACES: tuple[tuple[str, str], ...] = (
    ("001", "neutral"), ("001", "smiling"), ("004", "neutral"), ("004", "smiling"),
    ("009", "neutral"), ("009", "smiling"),
)


class ReferenceUnavailable(RuntimeError):
    """node or npm is missing, or the pinned packages could not be installed."""


@dataclass(frozen=True)
class ReferenceImage:
    """A full image and its 68 landmarks, for face-api's own crop path."""

    rgb: np.ndarray
    landmarks68: np.ndarray


def _lock_hash() -> str:
    return hashlib.sha256((HARNESS / "package-lock.json").read_bytes()).hexdigest()[:16]


def _check_lock() -> None:
    lock = json.loads((HARNESS / "package-lock.json").read_text())
    entry = lock["packages"][f"node_modules/{NPM_PACKAGE}"]
    if entry["version"] != NPM_VERSION or entry["integrity"] != NPM_INTEGRITY:
        raise AssertionError(f"package-lock.json pins {NPM_PACKAGE} {entry['version']} {entry['integrity']}, "
                             f"the converter {NPM_VERSION} {NPM_INTEGRITY}")


def install(cache_dir: Path | None = None) -> Path:
    """The folder with the pinned packages installed (`npm ci`, once per lock file); raises ReferenceUnavailable."""
    _check_lock()
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise ReferenceUnavailable("node/npm not found on PATH")
    root = cache_dir or Path(os.environ.get("CIEP_CACHE_DIR", Path.home() / ".cache" / "ciep"))
    dest = root / f"faceapi-reference-{_lock_hash()}"
    if (dest / ".installed").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="faceapi-reference-tmp-", dir=root))  # same file system: atomic rename
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(HARNESS / name, tmp / name)
        proc = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=tmp, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise ReferenceUnavailable(f"npm ci failed ({proc.returncode}): {proc.stderr[-2000:]}")
        (tmp / ".installed").write_text(NPM_INTEGRITY + "\n")
        try:
            tmp.rename(dest)
        except OSError:  # another process installed it first
            if not (dest / ".installed").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def run_reference(crops: np.ndarray, images: list[ReferenceImage] | tuple[()] = (),
                  cache_dir: Path | None = None) -> dict:
    """face-api's outputs: `logits`/`probabilities` (N, 7) for the uint8 crops; per image, face-api's own
    crop box and `probabilities` from its aligned-box path (FaceLandmarks68.align, extractFaceTensors)."""
    crops = np.ascontiguousarray(crops, dtype=np.uint8)
    assert crops.ndim == 4 and crops.shape[1:] == (112, 112, 3), crops.shape
    folder = install(cache_dir)
    with tempfile.TemporaryDirectory(prefix="faceapi-request-") as tmp:
        req_dir = Path(tmp)
        (req_dir / "crops.bin").write_bytes(crops.tobytes())
        req_images = []
        for k, im in enumerate(images):
            rgb = np.ascontiguousarray(im.rgb, dtype=np.uint8)
            (req_dir / f"image{k}.bin").write_bytes(rgb.tobytes())
            req_images.append({"file": f"image{k}.bin", "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
                               "landmarks": np.asarray(im.landmarks68, np.float64).tolist()})
        (req_dir / "request.json").write_text(json.dumps({"num_crops": int(crops.shape[0]), "images": req_images}))
        out_file = req_dir / "out.json"
        env = dict(os.environ, NODE_PATH=str(folder / "node_modules"))
        proc = subprocess.run([shutil.which("node") or "node", str(HARNESS / "run.cjs"), str(req_dir), str(out_file)],
                              cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"face-api reference failed ({proc.returncode}): {proc.stderr[-3000:]}")
        out = json.loads(out_file.read_text())
    out["logits"] = np.asarray(out["logits"], np.float32).reshape(-1, 7)
    out["probabilities"] = np.asarray(out["probabilities"], np.float32).reshape(-1, 7)
    return out


def fixture_inputs() -> tuple[list[str], np.ndarray, list[ReferenceImage]]:
    """Names, expression crops and images+landmarks of the fixture's demo-corpus faces (dlib landmarks)."""
    from stages.face.dlib_models import DlibDetector
    from stages.face.expression_net import expression_crop
    from stages.face.image_io import decode_image
    from tests.conftest import DEMO_CORPUS

    det = DlibDetector()
    names, crops, images = [], [], []
    for ident, expr in FIXTURE_FACES:
        rgb = decode_image((DEMO_CORPUS / ident / f"{expr}.jpg").read_bytes(), 40_000_000)
        (face,) = det.detect(rgb)
        assert face.landmarks68 is not None
        names.append(f"{ident}/{expr}")
        crops.append(expression_crop(rgb, face.landmarks68))
        images.append(ReferenceImage(rgb, face.landmarks68))
    return names, np.stack(crops), images


def write_fixture(path: Path = FIXTURE) -> Path:
    """Run the reference on the fixture faces and store crops, landmarks and face-api's outputs."""
    names, crops, images = fixture_inputs()
    ref = run_reference(crops, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, names=np.array(names), crops=crops, landmarks=np.stack([im.landmarks68 for im in images]),
        logits=ref["logits"], probabilities=ref["probabilities"],
        pipeline_probabilities=np.array([im["probabilities"] for im in ref["images"]], np.float32),
        pipeline_boxes=np.array([im["box"] for im in ref["images"]], np.int64),
        source=np.array(f"npm:{NPM_PACKAGE}@{NPM_VERSION} {NPM_INTEGRITY}; tfjs {ref['tfjs_version']} "
                        f"backend {ref['backend']}"))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="face-api reference outputs")
    ap.add_argument("--write-fixture", action="store_true", help=f"rewrite {FIXTURE}")
    args = ap.parse_args(argv)
    if args.write_fixture:
        path = write_fixture()
        print(f"wrote {path}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
