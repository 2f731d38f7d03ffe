"""The denoising loop: DDIM (eta 0) over UNet + E-Adapter with classifier-free guidance, then VAE decode."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from stages.eadapter.text import PromptEmbeds


def make_scheduler(scheduler_config: dict) -> DDIMScheduler:
    """A deterministic DDIM scheduler with the base model's noise schedule."""
    return DDIMScheduler.from_config(scheduler_config)


def added_text_kwargs(unet: UNet2DConditionModel, pooled: torch.Tensor | None, batch: int, height: int,
                      width: int) -> dict[str, Any]:
    """SDXL-class "text_time" conditioning (pooled text + size/crop ids); empty for SD1.5-class UNets."""
    if unet.config.addition_embed_type != "text_time":
        return {}
    if pooled is None:
        raise ValueError("an SDXL-class UNet needs pooled text embeddings (text_encoder_2 or pooled_prompt_embeds)")
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=pooled.device, dtype=pooled.dtype)
    return {"text_embeds": pooled.expand(batch, -1), "time_ids": time_ids.expand(batch, -1)}


def initial_noise(seeds: list[int], shape: tuple[int, int, int], device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """One CPU generator per seed, so a request's noise does not depend on its batch or on the device."""
    noise = [torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
    return torch.cat(noise).to(device, dtype)


@torch.no_grad()
def generate(unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDIMScheduler, *, noise: torch.Tensor,
             cond: PromptEmbeds, uncond: PromptEmbeds, image_embeds: list[torch.Tensor], steps: int,
             guidance_scale: float, init_latents: torch.Tensor | None = None, strength: float = 1.0) -> np.ndarray:
    """Denoise `noise` (B, C, h, w) under the conditions; uint8 (B, H, W, 3) images.

    With init_latents and strength < 1 the loop starts from init_latents noised to that strength (img2img).
    Unconditional guidance branch: the negative prompt and all-zero identity / expression inputs.
    """
    batch = noise.shape[0]
    scheduler.set_timesteps(steps, device=noise.device)
    timesteps = scheduler.timesteps
    if init_latents is not None and strength < 1.0:
        keep = min(max(int(round(steps * strength)), 1), steps)
        timesteps = timesteps[steps - keep:]
        latents = scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(batch))
    else:
        latents = noise * scheduler.init_noise_sigma
    cfg = guidance_scale > 1.0
    height, width = (s * (2 ** (len(vae.config.block_out_channels) - 1)) for s in noise.shape[-2:])
    text = cond.embeds.expand(batch, -1, -1)
    embeds = image_embeds
    pooled = None if cond.pooled is None else cond.pooled
    if cfg:
        text = torch.cat([uncond.embeds.expand(batch, -1, -1), text])
        embeds = [torch.cat([torch.zeros_like(e), e]) for e in image_embeds]
        if pooled is not None:
            assert uncond.pooled is not None  # both prompts are encoded by the same text encoders
            pooled = torch.cat([uncond.pooled.expand(batch, -1), pooled.expand(batch, -1)])
    n = text.shape[0]
    added = {"image_embeds": embeds, **added_text_kwargs(unet, pooled, n, height, width)}
    for t in timesteps:
        model_in = torch.cat([latents, latents]) if cfg else latents
        model_in = scheduler.scale_model_input(model_in, t)
        pred = unet(model_in, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
        if cfg:
            pred_uncond, pred_cond = pred.chunk(2)
            pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
        latents = scheduler.step(pred, t, latents).prev_sample
    return decode(vae, latents)


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor) -> np.ndarray:
    """Latents -> uint8 (B, H, W, 3); decodes in fp32 when the VAE asks for it (force_upcast)."""
    if latents.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        vae = vae.to(torch.float32)
        latents = latents.float()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    images = vae.decode(latents / vae.config.scaling_factor + shift).sample
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images in [-1, 1] -> scaled latents (distribution mean: deterministic)."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents = vae.encode(images.to(vae.dtype)).latent_dist.mean
    return (latents - shift) * vae.config.scaling_factor
