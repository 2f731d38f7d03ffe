"""CPU throughput of the ONNX face backends on the stand-in models (tests/models/onnx_stand_ins.py).

What this measures: each backend's own work (decode-free: alignment warps, colour conversion and
normalisation, SCRFD letterbox/decoding/NMS, embedding maps, paste-back and masks) plus a TINY
untrained network with the real model's inputs and outputs. It does NOT measure the real models'
FLOPs (inswapper_128 ~0.5 GB, hyperswap ~0.4 GB, det_10g 10 GFLOPs at 640): with the real files the
network dominates and these numbers are an upper bound.

    python -m benchmarks.bench_onnx_backends [--seconds 2] [--append benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile

import onnxruntime as ort

from benchmarks.common import DEMO_CORPUS, best_rate, cores, cpu_name, load_average, print_section

HEADING = "## ONNX backends"


def run(seconds: float) -> list[tuple[str, str, float]]:
    import cv2
    import numpy as np

    from pipeline.config import config_from_dict
    from stages.face.dlib_models import DlibDetector
    from stages.onnx.arcface import ArcFaceEmbedder
    from stages.onnx.model_files import resolve_model
    from stages.onnx.scrfd import ScrfdDetector, dlib_landmarker
    from stages.onnx.swapper import OnnxSwapper
    from tests.models.onnx_stand_ins import stand_in_config, write_stand_ins

    files = sorted(DEMO_CORPUS.glob("*/*.jpg"))[:8]
    images = [np.ascontiguousarray(cv2.imread(str(p))[:, :, ::-1]) for p in files]
    dlib = DlibDetector()
    faces = [max(dlib.detect(im), key=lambda f: f.short_side) for im in images]
    folder = tempfile.mkdtemp(prefix="ciep_bench_")
    models = stand_in_config(folder, write_stand_ins(folder))

    def cfg(**sections: dict):
        return config_from_dict({"models": models, **sections})

    rows: list[tuple[str, str, float]] = []
    emb = ArcFaceEmbedder.from_config(cfg().models)
    pairs = list(zip(images, faces, strict=False))
    rows.append(("arcface (norm_crop 112 + net)", "1 face/call",
                 best_rate(lambda: (emb.embed(*pairs[0]), 1)[1], seconds)))
    rows.append(("arcface (norm_crop 112 + net)", "8 faces/call",
                 best_rate(lambda: len(emb.embed_batch(pairs)), seconds)))

    scrfd_cfg = cfg(ingest={"detector": "scrfd", "scrfd_model": "scrfd_10g"})
    det = ScrfdDetector(resolve_model(scrfd_cfg.models, "scrfd_10g"), ["CPUExecutionProvider"])
    rows.append(("scrfd 640 (letterbox, decode, NMS)", "512x512 image",
                 best_rate(lambda: (det.detect(images[0]), 1)[1], seconds)))
    land = dlib_landmarker(scrfd_cfg.ingest)
    rows.append(("dlib 68 landmarks on a box (scrfd add-on)", "1 face",
                 best_rate(lambda: (land(images[0], faces[0].box), 1)[1], seconds)))

    items = [(images[0], faces[0], im, f) for im, f in zip(images, faces, strict=False)]
    for model, extra in (("inswapper_128", {}), ("hyperswap_1a_256", {}), ("simswap_256", {}),
                         ("hyperswap_1a_256", {"occluder_model": "xseg_3", "parser_model": "bisenet_resnet_34"})):
        sw_cfg = cfg(identity_swap={"backend": "onnx", "model": model, **extra})
        sw = OnnxSwapper.from_config(sw_cfg.identity_swap, sw_cfg.models)
        label = model + (" + xseg + bisenet masks" if extra else "")
        rows.append((label, "1 item/call", best_rate(lambda sw=sw: (sw.swap(*items[1]), 1)[1], seconds)))
        rows.append((label, "8 items/call", best_rate(lambda sw=sw: len(sw.swap_batch(items)), seconds)))
    return rows


def markdown(rows: list[tuple[str, str, float]], seconds: float) -> str:
    lines = [
        HEADING, "",
        f"- machine: {platform.processor() or platform.machine()}, {cpu_name()}, "
        f"{cores()} CPU cores, onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())}), "
        f"Python {platform.python_version()}; load average at the end {load_average()}",
        f"- command: `python -m benchmarks.bench_onnx_backends --seconds {seconds:g}` (best of 3 windows per row)",
        "- what it measures: each backend's pre/post-processing (alignment, normalisation, SCRFD decoding, "
        "emap, paste-back, masks) plus a tiny untrained stand-in net with the real I/O "
        "(tests/models/onnx_stand_ins.py); NOT the real models' FLOPs, so with the real files these rates are upper "
        "bounds.",
        "- images: London demo faces, 512x512; swap = source face onto target photo, full paste-back.",
        "",
        "| backend | unit | images/s |",
        "|---|---|---:|",
    ]
    lines += [f"| {name} | {unit} | {rate:.1f} |" for name, unit, rate in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="length of each of the 3 timing windows per row")
    p.add_argument("--append", help="add the markdown section to this file (e.g. benchmarks/RESULTS.md)")
    args = p.parse_args(argv)
    text = markdown(run(args.seconds), args.seconds)
    print_section(text, HEADING, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
