"""Benchmark the E-Adapter expression-transfer backend: images/s and peak memory per batch size.

  python -m benchmarks.bench_eadapter                 # tiny SD-shaped model, CPU fp32 (runs anywhere)
  python -m benchmarks.bench_eadapter --sd15          # SD1.5 architecture, random weights, fp16 on CUDA
  ... --results benchmarks/RESULTS.md                 # also append a markdown section there

The tiny run goes through the user path (model folder -> EAdapterTransferer.from_config). The --sd15 run
builds an SD1.5-architecture UNet / VAE and a ViT-H/14 image encoder with random weights in memory (speed
depends on the architecture, not the weights) and random precomputed prompt embeddings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import PeakRSS, append_to_section, load_average, machine
from pipeline.config import config_from_dict
from stages.config import ExpressionTransferConfig
from stages.eadapter.backend import EAdapterTransferer
from stages.eadapter.base_model import BaseModel
from stages.eadapter.model import EAdapter
from stages.eadapter.text import TextConditioner
from stages.face.protocols import TransferRequest
from stages.face.types import DetectedFace


def thumbnail_embedder(rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
    """A cheap deterministic 128-d stand-in for dlib (the benchmark measures the diffusion model)."""
    small = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(rgb).float().mean(-1)[None], (16, 8))
    vec = small.flatten().numpy() - 128.0
    return vec / (np.linalg.norm(vec) + 1e-6)


def requests(n: int, size: int) -> list[TransferRequest]:
    rng = np.random.default_rng(0)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lm = np.stack([size / 2 + size * 0.35 * np.cos(angles), size / 2 + size * 0.4 * np.sin(angles)], 1)
    lm = lm.astype(np.float32)
    return [TransferRequest(carrier_rgb=rng.integers(0, 255, (size, size, 3), dtype=np.uint8), carrier_landmarks=lm,
                            source_landmarks=lm, target_rgb=rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                            target_landmarks=lm, seed=i) for i in range(n)]


def sd15_transferer(et: ExpressionTransferConfig, device: torch.device) -> EAdapterTransferer:
    """SD1.5 UNet + VAE and ViT-H/14 image encoder, random weights, fp16 on CUDA (fp32 on CPU)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                            sample_size=512)
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
            patch_size=14, projection_dim=1024))
    for m in (unet, vae, encoder):
        m.to(device, dtype).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    text = TextConditioner([], [], precomputed={"prompt_embeds": torch.randn(1, 77, 768, generator=g),
                                                "negative_prompt_embeds": torch.randn(1, 77, 768, generator=g)})
    sched = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1, "skip_prk_steps": True}
    base = BaseModel(folder=Path("<random-sd15>"), unet=unet, vae=vae, scheduler_config=sched, image_encoder=encoder,
                     text=text, files={"random": "0"})
    adapter = EAdapter.create(unet, encoder.config, identity_dim=et.identity_dim, identity_tokens=et.identity_tokens,
                              expression_tokens=et.expression_tokens, expression_features=et.expression_features,
                              identity_layers=et.identity_layers, expression_layers=et.expression_layers, seed=0,
                              expression_heads=12, expression_depth=4)
    return EAdapterTransferer(base, adapter, thumbnail_embedder, et)


def run(args: argparse.Namespace) -> tuple[str, list[dict]]:
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    batches = [int(b) for b in args.batches.split(",")]
    section = {"num_inference_steps": args.steps, "guidance_scale": args.guidance, "device": device.type,
               "resources": {"batch_size": max(batches)}}
    tmp = tempfile.TemporaryDirectory()
    if args.sd15:
        if device.type != "cuda":
            sys.stderr.write("warning: --sd15 without CUDA runs in fp32 on CPU (very slow)\n")
        et = ExpressionTransferConfig(backend="eadapter", base_model="<random-sd15>", **section)
        tr = sd15_transferer(et, device)
        size, label = 512, "SD1.5 architecture (random weights), 512 px"
    else:
        from tests.models.tiny_eadapter import build_tiny_sd

        folder = build_tiny_sd(Path(tmp.name) / "tiny")
        tr = EAdapterTransferer.from_config(config_from_dict({"expression_transfer": {
            "backend": "eadapter", "base_model": str(folder), **section}}).expression_transfer,
            embedder=thumbnail_embedder)
        size, label = 64, "tiny SD-shaped model (tests/models/tiny_eadapter.py), 64 px"
    rows = []
    for b in batches:
        tr.batch_size = b
        reqs = requests(b, size)
        tr.transfer(reqs)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        tracemalloc.start()
        times = []
        with PeakRSS(0.005) as rss:
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                tr.transfer(reqs)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        _, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        best = min(times)  # best of the repeats: the least disturbed by other load on the machine
        rows.append({"batch": b, "images_per_s": b / best, "s_per_batch": best,
                     "median_s_per_batch": float(np.median(times)), "peak_rss_mib": rss.peak / 2**20,
                     "py_peak_mib": py_peak / 2**20,
                     "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None})
    tmp.cleanup()
    dtype = "fp16" if device.type == "cuda" else "fp32"
    return f"{label}, {device.type} {dtype}, {args.steps} DDIM steps, guidance {args.guidance}", rows


def markdown(title: str, rows: list[dict], command: str) -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    lines = [f"### {title}", "",
             f"- machine: {machine()}, GPU: {gpu}; torch {torch.__version__}, threads {torch.get_num_threads()}",
             f"- date: {dt.date.today().isoformat()}; load average at the end {load_average()}",
             f"- command: `{command}`",
             "- images/s and s/batch: best of the repeats (median s/batch beside it); peak RSS: whole process "
             "(models included); tracemalloc sees Python allocations only, not torch tensors", "",
             "| batch | images/s | s/batch (best) | s/batch (median) | peak RSS MiB | Python peak MiB "
             "| CUDA peak MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cuda = f"{r['cuda_peak_mib']:.0f}" if r["cuda_peak_mib"] is not None else "-"
        lines.append(f"| {r['batch']} | {r['images_per_s']:.2f} | {r['s_per_batch']:.3f} | "
                     f"{r['median_s_per_batch']:.3f} | {r['peak_rss_mib']:.0f} | "
                     f"{r['py_peak_mib']:.1f} | {cuda} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sd15", action="store_true", help="SD1.5 architecture with random weights (GPU, fp16)")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,4,8)")
    ap.add_argument("--steps", type=int, default=30, help="denoising steps (config default 30)")
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", choices=("auto", "cpu"), default="auto")
    ap.add_argument("--results", help="append a markdown section to this file (e.g. benchmarks/RESULTS.md)")
    args = ap.parse_args(argv)
    args.batches = args.batches or "1,4,8"
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    title, rows = run(args)
    command = "python -m benchmarks.bench_eadapter " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(title, rows, command.strip())
    sys.stdout.write(text)
    if args.results:
        append_to_section(Path(args.results), text, "## E-Adapter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
