"""Train the E-Adapter on {S, R, T} triples with Ray Train (TorchTrainer) reading through Ray Data.

Triple rows (Ray Data dataset or list of dicts):
  s_path, t_path       image URLs (fsspec), aligned face crops; S = identity i other expression, T = i with e
  r_path               refined mode only: expression e on another identity
  s_embedding          identity embedding of S (list of floats, the adapter's identity_dim, e.g. dlib 128-d)
  t_landmarks, r_landmarks   optional (68, 2) or flat 136 floats in the crop's pixel coordinates; they give the
                       face-hull mask of the expression template (without them: a centred ellipse)

mode "base":    identity from S, expression from R = augmented T (flip, colour jitter, small affine), target T
mode "refined": identity from S, expression from R, target T (IDI triples)

Loss: epsilon (or v, if the base scheduler says so) MSE with DDPMScheduler.add_noise; only adapter weights train.
Checkpoints go to <output>/checkpoints/step-XXXXXXXX/{adapter/, optimizer.pt, state.json} and
<output>/checkpoints/latest.json; a new call with the same output resumes from the latest one.
The final adapter is <output>/adapter (EAdapter.save_pretrained), the loss history <output>/train_log.json.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from core.location import Location
from pipeline.config import TrainConfig, load_config
from stages.config import ExpressionTransferConfig
from stages.eadapter import storage

log = logging.getLogger(__name__)

Mode = Literal["base", "refined"]
LATEST = "latest.json"
CACHE_LIMIT_BYTES = 512 * 1024 * 1024


@dataclass
class TrainResult:
    adapter_url: str  # folder written by EAdapter.save_pretrained: the next round's expression_transfer.adapter
    adapter_id: str
    adapter_sha256: str
    mode: str
    steps: int
    start_step: int  # > 0 when the run resumed from a checkpoint
    losses: list[float] = field(default_factory=list)  # one per step, resumed history included
    checkpoint_url: str = ""
    train_seconds: float = 0.0  # wall time of this call's training loop (rank 0)

    def mean_loss(self, first: int | None = None, last: int | None = None) -> float:
        vals = self.losses[:first] if first else self.losses[-last:] if last else self.losses
        return float(np.mean(vals)) if vals else float("nan")


# ---- data --------------------------------------------------------------------------------------------
def _read_rgb(files: Location, url: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    with files.open_url(url) as fh:
        img = Image.open(io.BytesIO(fh.read())).convert("RGB")
    orig = img.size
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC)), orig


def _landmarks(value: Any, orig: tuple[int, int], size: int) -> np.ndarray | None:
    """(68, 2) landmarks from a row value (nested or flat), rescaled from the original image to `size`."""
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.dtype == object:
        arr = np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in arr])
    lm = arr.astype(np.float32).reshape(68, 2)
    return lm * np.array([size / orig[0], size / orig[1]], np.float32)


def decode_triples(batch: dict[str, np.ndarray], mode: Mode, resolution: int,
                   files: Location | None = None) -> dict[str, np.ndarray]:
    """Ray Data map_batches function: image URLs (read with `files`' storage options) -> T pixels, masked
    expression template, S embedding."""
    from stages.eadapter.conditions import masked_face

    files = files or Location(".")
    n = len(batch["t_path"])
    targets, templates, embeds = [], [], []
    for i in range(n):
        t_img, t_orig = _read_rgb(files, str(batch["t_path"][i]), resolution)
        if mode == "refined":
            r_img, r_orig = _read_rgb(files, str(batch["r_path"][i]), resolution)
            lm = _landmarks(batch["r_landmarks"][i], r_orig, resolution) if "r_landmarks" in batch else None
        else:
            r_img = t_img
            lm = _landmarks(batch["t_landmarks"][i], t_orig, resolution) if "t_landmarks" in batch else None
        targets.append(t_img)
        templates.append(masked_face(r_img, lm))
        embeds.append(np.asarray(batch["s_embedding"][i], np.float32).reshape(-1))
    return {"t_image": np.stack(targets), "expr_image": np.stack(templates), "s_embedding": np.stack(embeds)}


def _as_dataset(triples: Any, mode: Mode) -> Any:
    import ray.data

    ds = ray.data.from_items(list(triples)) if isinstance(triples, list) else triples
    need = {"s_path", "t_path", "s_embedding"} | ({"r_path"} if mode == "refined" else set())
    missing = need - set(ds.columns())
    if missing:
        raise ValueError(
            f"triples lack columns {sorted(missing)} needed in mode {mode!r} (see pipeline/train_adapter.py)")
    return ds


# ---- checkpoints -------------------------------------------------------------------------------------
def latest_checkpoint(output: Location | str) -> str | None:
    """URL of the newest complete checkpoint under the output folder, or None."""
    checkpoints = Location.of(output).join("checkpoints")
    if not checkpoints.exists(LATEST):
        return None
    name = json.loads(checkpoints.read_bytes(LATEST))["checkpoint"]
    return checkpoints.join(name).url


def _save_checkpoint(output: Location, adapter: Any, optimizer: torch.optim.Optimizer, state: dict, keep: int) -> str:
    name = f"step-{state['step']:08d}"
    checkpoints = output.join("checkpoints")
    folder = checkpoints.join(name)
    adapter.save_pretrained(folder.join("adapter"))
    buf = io.BytesIO()
    torch.save(optimizer.state_dict(), buf)
    storage.write_bytes(folder.join("optimizer.pt"), buf.getvalue())
    storage.write_bytes(folder.join("state.json"), json.dumps(state).encode())
    # the pointer is written last: a checkpoint is used only once all its files exist
    storage.write_bytes(checkpoints.join(LATEST), json.dumps({"checkpoint": name}).encode())
    fs = checkpoints.fs
    old = sorted(p for p in fs.ls(checkpoints.path, detail=False)
                 if p.rstrip("/").rsplit("/", 1)[-1].startswith("step-"))
    for path in old[:-keep]:
        fs.rm(path, recursive=True)
    return folder.url


# ---- the per-worker loop -----------------------------------------------------------------------------
def _batches(shard: Any, batch_size: int, rng: np.random.Generator,
             cache_limit_bytes: int = CACHE_LIMIT_BYTES) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches of a Ray Data shard.

    A shard that fits in cache_limit_bytes is read once and reshuffled in memory each epoch (a streaming
    re-read per epoch costs more than a training step on small data); a larger one is streamed every epoch.
    """
    cache: list[dict[str, np.ndarray]] | None = []
    size = 0
    rows = 0
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", local_shuffle_buffer_size=256,
                                    local_shuffle_seed=int(rng.integers(2**31))):
        rows += len(batch["t_image"])
        if cache is not None:
            size += sum(v.nbytes for v in batch.values())
            cache = cache + [batch] if size <= cache_limit_bytes else None
        yield batch
    if rows == 0:
        raise ValueError("the training dataset shard is empty")
    if cache is None:
        while True:
            yield from shard.iter_batches(batch_size=batch_size, batch_format="numpy", local_shuffle_buffer_size=256,
                                          local_shuffle_seed=int(rng.integers(2**31)))
    table = {k: np.concatenate([b[k] for b in cache]) for k in cache[0]}
    while True:
        order = rng.permutation(rows)
        for i in range(0, rows - batch_size + 1 if rows >= batch_size else 1, batch_size):
            idx = order[i:i + batch_size]
            yield {k: v[idx] for k, v in table.items()}


class _Denoiser(torch.nn.Module):
    """UNet (with the adapter attached) as one module, so Ray can wrap it in DDP."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, text: torch.Tensor, added: dict) -> torch.Tensor:
        return self.unet(noisy, t, encoder_hidden_states=text, added_cond_kwargs=added).sample


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: load the frozen base, build/resume the adapter, train, checkpoint from rank 0."""
    import ray.train
    import ray.train.torch
    from diffusers import DDPMScheduler

    from stages.eadapter.augment import augment_template
    from stages.eadapter.base_model import load_base_model
    from stages.eadapter.image_encoder import ExpressionEncoder
    from stages.eadapter.model import EAdapter
    from stages.eadapter.sampler import added_text_kwargs, encode

    tc = TrainConfig.model_validate(config["train"])
    et = ExpressionTransferConfig.model_validate(config["expression_transfer"])
    mode, output = config["mode"], config["output"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    base = load_base_model(config["base_model"], device=device, dtype=torch.float32, image_encoder=et.image_encoder,
                           cache_dir=et.cache_dir)

    resume_url = latest_checkpoint(output)
    resume = output.at(resume_url) if resume_url else None  # the checkpoint, with the output's options
    state: dict[str, Any] = {"step": 0, "losses": []}
    if resume:
        adapter = EAdapter.from_pretrained(resume.join("adapter"))
        state = json.loads(resume.read_bytes("state.json"))
    elif config["init_adapter"]:
        adapter = EAdapter.from_pretrained(output.at(config["init_adapter"]))
    else:
        adapter = EAdapter.create(base.unet, base.image_encoder.config, identity_dim=et.identity_dim,
                                  identity_tokens=et.identity_tokens, expression_tokens=et.expression_tokens,
                                  expression_features=et.expression_features, identity_layers=et.identity_layers,
                                  expression_layers=et.expression_layers, seed=tc.seed)
    start_step = int(state["step"])
    losses: list[float] = list(state["losses"])
    adapter.check_image_encoder(base.image_encoder.config)
    adapter.config.name = f"eadapter-{mode}"
    adapter.config.provenance = {"kind": "trained", "mode": mode, "init": config["init_adapter_id"],
                                 "base_model_sha256": base.sha256, "steps": tc.steps, "seed": tc.seed,
                                 "batch_size": tc.batch_size, "learning_rate": tc.learning_rate}
    adapter.attach(base.unet)
    adapter.set_scale(1.0, 1.0)
    for p in base.unet.parameters():
        p.requires_grad_(False)
    adapter.train().requires_grad_(True)
    params = [p for p in adapter.parameters() if p.requires_grad]
    model = ray.train.torch.prepare_model(_Denoiser(base.unet),
                                          parallel_strategy_kwargs={"find_unused_parameters": True})
    optimizer = torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    if resume:
        optimizer.load_state_dict(torch.load(io.BytesIO(resume.read_bytes("optimizer.pt")),
                                             weights_only=True))

    noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
    prediction_type = noise_scheduler.config.prediction_type
    encoder = ExpressionEncoder(base.image_encoder, adapter.config.expression_features)
    cond, uncond = base.text.encode(et.prompt, "", device=device, dtype=torch.float32)
    rng = np.random.default_rng([tc.seed, rank, start_step])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    shard = ray.train.get_dataset_shard("train")

    step = start_step
    started = time.perf_counter()
    for batch in _batches(shard, tc.batch_size, rng):
        templates = batch["expr_image"]
        if mode == "base":
            templates = np.stack([augment_template(t, rng) for t in templates])
        pixels = torch.from_numpy(batch["t_image"]).permute(0, 3, 1, 2).to(device, torch.float32) / 127.5 - 1
        bsz = pixels.shape[0]
        with torch.no_grad():
            latents = encode(base.vae, pixels)
            expr = encoder.encode(list(templates)).float()
        ident = torch.from_numpy(batch["s_embedding"]).to(device, torch.float32)
        noise = torch.randn(latents.shape, generator=gen).to(device)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), generator=gen).to(device)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, t)
        drop = (torch.rand((3, bsz), generator=gen) < tc.cond_drop_prob).to(device)
        ident = torch.where(drop[0, :, None], torch.zeros_like(ident), ident)
        expr = torch.where(drop[1].view(-1, *([1] * (expr.ndim - 1))), torch.zeros_like(expr), expr)
        text = torch.where(drop[2, :, None, None], uncond.embeds.expand(bsz, -1, -1), cond.embeds.expand(bsz, -1, -1))
        pooled = None
        if cond.pooled is not None:
            assert uncond.pooled is not None  # both prompts are encoded by the same text encoders
            pooled = torch.where(drop[2, :, None], uncond.pooled.expand(bsz, -1), cond.pooled.expand(bsz, -1))
        added = {**EAdapter.added_cond_kwargs(ident, expr),
                 **added_text_kwargs(base.unet, pooled, bsz, pixels.shape[-2], pixels.shape[-1])}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            pred = model(noisy, t, text, added)
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
        optimizer.step()
        adapter.mark_changed()
        step += 1
        losses.append(float(loss.detach()))
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            if rank == 0:
                _save_checkpoint(output, adapter, optimizer, {"step": step, "losses": losses, "mode": mode},
                                 tc.keep_checkpoints)
            # a report is a barrier across workers (about a second on Ray Train v2): only at checkpoints
            ray.train.report({"step": step, "loss": float(np.mean(losses[-tc.checkpoint_every:]))})
        if step >= tc.steps:
            break

    if rank == 0:
        adapter_folder = output.join("adapter")
        adapter_url = adapter_folder.url
        digest = adapter.save_pretrained(adapter_folder)
        log_doc = {"adapter_url": adapter_url, "adapter_id": adapter.adapter_id, "adapter_sha256": digest,
                   "mode": mode, "steps": step, "start_step": start_step, "losses": losses,
                   "checkpoint_url": latest_checkpoint(output) or "",
                   "train_seconds": time.perf_counter() - started}
        storage.write_bytes(output.join("train_log.json"), json.dumps(log_doc).encode())


# ---- driver ------------------------------------------------------------------------------------------
def train_adapter(triples: Any, mode: Mode, base_model: str, init_adapter: str | None, output: Location | str,
                  train_cfg: TrainConfig, *, expression_cfg: ExpressionTransferConfig | None = None,
                  storage_path: str | None = None, run_name: str | None = None) -> TrainResult:
    """Train (or resume training) an adapter with Ray Train; returns where it was written and the loss history.

    output: the folder for checkpoints and the adapter; a Location carries the storage options that reach it
    (the run's: also used for the triples' images and init_adapter), a plain path or URL has none.

    triples: ray.data.Dataset or list of row dicts (columns in the module docstring).
    expression_cfg: prompt, image encoder, cache dir and the architecture of a fresh adapter (init_adapter None).
    Ray is started locally when not already initialised.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if mode not in ("base", "refined"):
        raise ValueError(f"mode must be 'base' or 'refined', got {mode!r}")
    out = Location.of(output)
    et = expression_cfg or ExpressionTransferConfig(backend="eadapter", base_model=base_model)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    init_id = None
    if init_adapter:
        from stages.eadapter.model import EAdapter

        init_id = EAdapter.from_pretrained(out.at(init_adapter)).adapter_id  # fails early on a bad/tampered adapter
    ds = _as_dataset(triples, mode).map_batches(
        decode_triples, fn_kwargs={"mode": mode, "resolution": train_cfg.resolution, "files": out}, batch_size=16,
        num_cpus=min(1.0, train_cfg.cpus_per_worker))
    loop_config = {"train": train_cfg.model_dump(mode="json"), "expression_transfer": et.model_dump(mode="json"),
                   "mode": mode, "base_model": base_model, "init_adapter": init_adapter, "init_adapter_id": init_id,
                   "output": out}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config, datasets={"train": ds},
        scaling_config=ScalingConfig(num_workers=train_cfg.num_workers, use_gpu=train_cfg.use_gpu,
                                     resources_per_worker={"CPU": train_cfg.cpus_per_worker}),
        run_config=RunConfig(name=run_name or f"eadapter-{mode}",
                             storage_path=storage_path or str(Path(tempfile.gettempdir()) / "ciep_ray_train")))
    trainer.fit()
    doc = json.loads(out.read_bytes("train_log.json"))
    return TrainResult(**doc)


def _read_triples(url: str) -> Any:
    import ray.data

    if url.endswith(".parquet") or not url.rsplit("/", 1)[-1].count("."):
        return ray.data.read_parquet(url)
    if url.endswith((".jsonl", ".json")):
        return ray.data.read_json(url)
    if url.endswith(".csv"):
        return ray.data.read_csv(url)
    raise ValueError(f"triples file {url}: expected .parquet, .jsonl or .csv")


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m pipeline.train_adapter --triples T.parquet --mode base --output URL [--config C.yaml]."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--triples", required=True, help="Parquet / JSONL / CSV of triple rows (fsspec URL)")
    ap.add_argument("--mode", choices=("base", "refined"), required=True)
    ap.add_argument("--output", required=True, help="fsspec URL for checkpoints and the trained adapter")
    ap.add_argument("--base-model", help="default: expression_transfer.base_model of the config")
    ap.add_argument("--init-adapter", help="adapter folder to start from (default: a fresh adapter)")
    ap.add_argument("--config", help="pipeline YAML config (train: and expression_transfer: sections are used)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE config override")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    base_model = args.base_model or cfg.expression_transfer.base_model
    if not base_model:
        ap.error("no base model: pass --base-model or set expression_transfer.base_model")
    result = train_adapter(_read_triples(args.triples), args.mode, base_model, args.init_adapter, args.output,
                           cfg.train, expression_cfg=cfg.expression_transfer)
    summary = {k: v for k, v in asdict(result).items() if k != "losses"}
    summary.update(first_loss=result.mean_loss(first=20), last_loss=result.mean_loss(last=20))
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
