"""Load a Stable-Diffusion-class base model from a local (or cached fsspec) folder in diffusers layout.

Layout (what `huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir X` gives, plus
an image encoder):

    X/unet/{config.json, diffusion_pytorch_model[.fp16].safetensors}
    X/vae/{config.json, diffusion_pytorch_model[.fp16].safetensors}
    X/scheduler/scheduler_config.json
    X/image_encoder/{config.json, model[.fp16].safetensors}   CLIPVisionModelWithProjection (e.g. IP-Adapter's
                                                                ViT-H/14 image encoder), or pass another folder
    X/text_encoder/ + X/tokenizer/                             CLIP text encoder and tokenizer; SDXL-class bases
                                                                also text_encoder_2/ + tokenizer_2/
    X/prompt_embeds.safetensors                                only when there is no tokenizer: precomputed text
                                                                conditioning (see stages/eadapter/text.py)

Only safetensors weights are read (never pickled .bin files). Everything loaded is hashed into `sha256`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPVisionModelWithProjection

from core.cache import ensure_local_folder
from core.hashing import sha256_file
from stages.eadapter.layout import (
    DIFFUSERS_WEIGHTS,
    HOWTO,
    TRANSFORMERS_WEIGHTS,
    BaseModelMissingError,
    require_component,
)
from stages.eadapter.text import TextConditioner, load_text_conditioner

__all__ = ["BaseModel", "BaseModelMissingError", "load_base_model", "resolve_device"]


@dataclass
class BaseModel:
    """The frozen parts of the diffusion model, on one device and dtype."""

    folder: Path
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler_config: dict
    image_encoder: CLIPVisionModelWithProjection
    text: TextConditioner
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 of every file loaded

    @property
    def sha256(self) -> str:
        """One hash over every file loaded (config and weights), so a changed file changes it."""
        lines = "".join(f"{k}\t{v}\n" for k, v in sorted(self.files.items()))
        return hashlib.sha256(lines.encode()).hexdigest()

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("expression_transfer.device is 'cuda' but torch sees no CUDA device")
    return torch.device(device)


def load_base_model(url: str, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                    image_encoder: str | None = None, cache_dir: str | None = None) -> BaseModel:
    """Load UNet, VAE, scheduler config, image encoder and text conditioning; every file is hashed."""
    root = ensure_local_folder(url, cache_dir)
    if not root.is_dir():
        raise BaseModelMissingError(f"base model folder {url} does not exist; {HOWTO.replace('FOLDER', str(url))}")
    loaded: list[Path] = []

    files, variant = require_component(root, "unet", "config.json", DIFFUSERS_WEIGHTS)
    loaded += files
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", variant=variant, use_safetensors=True,
                                                torch_dtype=dtype)
    files, variant = require_component(root, "vae", "config.json", DIFFUSERS_WEIGHTS)
    loaded += files
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", variant=variant, use_safetensors=True, torch_dtype=dtype)
    files, _ = require_component(root, "scheduler", "scheduler_config.json", None)
    loaded += files
    scheduler_config = json.loads(files[0].read_text())

    enc_root, enc_sub = (root, "image_encoder") if image_encoder is None else (
        ensure_local_folder(image_encoder, cache_dir), "")
    files, variant = require_component(enc_root, enc_sub, "config.json", TRANSFORMERS_WEIGHTS)
    loaded += files
    encoder = CLIPVisionModelWithProjection.from_pretrained(enc_root / enc_sub, variant=variant, dtype=dtype)

    text, text_files = load_text_conditioner(root, dtype=dtype)
    loaded += text_files

    for module in (unet, vae, encoder, *text.modules()):
        module.to(device).eval().requires_grad_(False)
    hashes = {}
    for path in loaded:
        try:
            key = str(path.relative_to(root))
        except ValueError:
            key = f"image_encoder:{path.name}"
        hashes[key] = sha256_file(path)
    return BaseModel(folder=root, unet=unet, vae=vae, scheduler_config=scheduler_config, image_encoder=encoder,
                     text=text, files=hashes)
