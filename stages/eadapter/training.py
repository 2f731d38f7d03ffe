"""The E-Adapter training loop of one worker, and what it leaves behind (`TrainResult`, train_log.json).

Loss: epsilon (or v, if the base scheduler says so) MSE with DDPMScheduler.add_noise; only adapter weights train.
Checkpoints: stages/eadapter/checkpoints.py; a new call with the same output resumes from the latest one. The
final adapter is <output>/adapter (EAdapter.save_pretrained), the loss history <output>/train_log.json.

Ray-free: the launcher (pipeline/train_adapter.py, Ray Train's TorchTrainer) hands the loop a `Worker` with its
rank, device, data shard and the data-parallel hooks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from core.location import Location
from stages.config import ExpressionTransferConfig
from stages.eadapter import storage
from stages.eadapter.augment import augment_template
from stages.eadapter.backend import build_adapter
from stages.eadapter.base_model import load_base_model
from stages.eadapter.checkpoints import latest_checkpoint, load_adapter, load_optimizer, load_state, save_checkpoint
from stages.eadapter.image_encoder import ExpressionEncoder
from stages.eadapter.model import EAdapter
from stages.eadapter.sampler import added_text_kwargs, encode
from stages.eadapter.training_data import Mode, shuffled_batches

TRAIN_LOG = "train_log.json"


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


def read_train_log(output: Location) -> TrainResult:
    """The TrainResult rank 0 wrote to <output>/train_log.json when training ended."""
    return TrainResult(**json.loads(output.read_bytes(TRAIN_LOG)))


class TrainSettings(Protocol):
    """The fields of the train section (pipeline.config.TrainConfig) the loop reads (read-only properties: the
    section is a frozen model)."""

    @property
    def steps(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def max_grad_norm(self) -> float: ...
    @property
    def cond_drop_prob(self) -> float: ...
    @property
    def checkpoint_every(self) -> int: ...
    @property
    def keep_checkpoints(self) -> int: ...
    @property
    def seed(self) -> int: ...


@dataclass(frozen=True)
class Worker:
    """One training worker as its launcher sets it up (pipeline/train_adapter.py: a Ray Train worker)."""

    rank: int
    device: torch.device
    shard: Any  # this worker's rows after decode_triples, with Ray's DataIterator.iter_batches
    prepare: Callable[[torch.nn.Module], torch.nn.Module]  # wraps the model for data-parallel training (DDP)
    report: Callable[[dict[str, Any]], None]  # metrics at each checkpoint; a barrier across workers


class _Denoiser(torch.nn.Module):
    """UNet (with the adapter attached) as one module, so Ray can wrap it in DDP."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, text: torch.Tensor, added: dict) -> torch.Tensor:
        return self.unet(noisy, t, encoder_hidden_states=text, added_cond_kwargs=added).sample


def train_on_worker(worker: Worker, tc: TrainSettings, et: ExpressionTransferConfig, *, mode: Mode,
                    base_model: str, init_adapter: str | None, init_adapter_id: str | None,
                    output: Location) -> None:
    """Load the frozen base, build/resume the adapter, train tc.steps steps, checkpoint and write the adapter and
    train_log.json from rank 0. A fresh adapter (no checkpoint, no init_adapter) is seeded with tc.seed."""
    from diffusers import DDPMScheduler

    rank, device = worker.rank, worker.device
    base = load_base_model(base_model, device=device, dtype=torch.float32, image_encoder=et.image_encoder,
                           cache_dir=et.cache_dir)

    resume_url = latest_checkpoint(output)
    resume = output.at(resume_url) if resume_url else None  # the checkpoint, with the output's options
    state: dict[str, Any] = {"step": 0, "losses": []}
    if resume:
        adapter = load_adapter(resume)
        state = load_state(resume)
    else:  # the builder of the expression-transfer stage, given init_adapter (or a fresh one from the train seed)
        adapter = build_adapter(et.model_copy(update={"adapter": init_adapter, "adapter_seed": tc.seed}), base,
                                output)
    start_step = int(state["step"])
    losses: list[float] = list(state["losses"])
    adapter.check_image_encoder(base.image_encoder.config)
    adapter.config.name = f"eadapter-{mode}"
    adapter.config.provenance = {"kind": "trained", "mode": mode, "init": init_adapter_id,
                                 "base_model_sha256": base.sha256, "steps": tc.steps, "seed": tc.seed,
                                 "batch_size": tc.batch_size, "learning_rate": tc.learning_rate}
    adapter.attach(base.unet)
    adapter.set_scale(1.0, 1.0)
    for p in base.unet.parameters():
        p.requires_grad_(False)
    adapter.train().requires_grad_(True)
    params = [p for p in adapter.parameters() if p.requires_grad]
    model = worker.prepare(_Denoiser(base.unet))
    optimizer = torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    if resume:
        load_optimizer(resume, optimizer)

    noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
    prediction_type = noise_scheduler.config.prediction_type
    encoder = ExpressionEncoder(base.image_encoder, adapter.config.expression_features)
    cond, uncond = base.text.encode(et.prompt, "", device=device, dtype=torch.float32)
    rng = np.random.default_rng([tc.seed, rank, start_step])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    step = start_step
    started = time.perf_counter()
    for batch in shuffled_batches(worker.shard, tc.batch_size, rng):
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
                save_checkpoint(output, adapter, optimizer, {"step": step, "losses": losses, "mode": mode},
                                tc.keep_checkpoints)
            # a report is a barrier across workers (about a second on Ray Train v2): only at checkpoints
            worker.report({"step": step, "loss": float(np.mean(losses[-tc.checkpoint_every:]))})
        if step >= tc.steps:
            break

    if rank == 0:
        adapter_folder = output.join("adapter")
        digest = adapter.save_pretrained(adapter_folder)
        result = TrainResult(adapter_url=adapter_folder.url, adapter_id=adapter.adapter_id, adapter_sha256=digest,
                             mode=mode, steps=step, start_step=start_step, losses=losses,
                             checkpoint_url=latest_checkpoint(output) or "",
                             train_seconds=time.perf_counter() - started)
        storage.write_bytes(output.join(TRAIN_LOG), json.dumps(asdict(result)).encode())
