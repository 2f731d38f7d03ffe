"""A tiny, randomly initialised Stable-Diffusion-shaped model folder (diffusers layout) for tests and benchmarks.

64 px images, 16x16 latents, cross_attention_dim 32. Loaded through the same code as a real SD1.5 folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from stages.eadapter.text import PROMPT_EMBEDS_FILE, TextConditioner

TINY_RESOLUTION = 64
CROSS_DIM = 32
MAX_TOKENS = 16
# merges of a few words, so tokenisation is not purely per character
_MERGES = ("f a", "fa c", "fac e</w>", "p h", "ph o", "pho t", "phot o</w>")


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_tokenizer(folder: Path) -> int:
    """vocab.json + merges.txt + tokenizer_config.json of a byte-level CLIP BPE tokenizer; returns vocab size."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for ch in _bytes_to_unicode():
            vocab[ch + suffix] = len(vocab)
    for merge in _MERGES:
        vocab.setdefault("".join(merge.split()), len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n")
    tokens = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
              "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(tokens))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_TOKENS, **tokens}))
    return len(vocab)


def _text_config(vocab_size: int, tokenizer: CLIPTokenizer, projection_dim: int = CROSS_DIM) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=CROSS_DIM, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=projection_dim,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


def tiny_unet(kind: Literal["sd15", "sdxl"] = "sd15", pooled_dim: int = CROSS_DIM) -> UNet2DConditionModel:
    """Two resolution levels, cross-attention in down, mid and up blocks (like SD1.5, scaled down)."""
    kwargs: dict = {}
    cross_dim = CROSS_DIM
    if kind == "sdxl":  # SDXL-class: two concatenated text encoders and text_time added conditioning
        cross_dim = 2 * CROSS_DIM
        kwargs = dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=6 * 8 + pooled_dim, transformer_layers_per_block=(1, 2),
                      use_linear_projection=True)
    return UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_dim,
        attention_head_dim=8, norm_num_groups=8, **kwargs)


def tiny_vae() -> AutoencoderKL:
    """Three encoder levels: a scale factor of 4, so 64 px images have 16x16 latents."""
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), latent_channels=4,
                         norm_num_groups=8, layers_per_block=1, sample_size=TINY_RESOLUTION)


def tiny_image_encoder() -> CLIPVisionModelWithProjection:
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=32))


def build_tiny_sd(folder: str | Path, *, seed: int = 0, text: Literal["tokenizer", "prompt_embeds"] = "tokenizer",
                  kind: Literal["sd15", "sdxl"] = "sd15") -> Path:
    """Write a tiny random SD1.5- (or SDXL-) shaped model to `folder` in diffusers layout and return the path.

    text="prompt_embeds" leaves out tokenizer/ and text_encoder/ and writes prompt_embeds.safetensors
    (the embeddings of "a photo of a face" and "") instead.
    """
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _write_tiny(folder, text, kind)
    return folder


def _write_tiny(folder: Path, text: str, kind: Literal["sd15", "sdxl"]) -> None:
    """Create and save every component (the caller seeds the RNG)."""
    vocab_size = write_tiny_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    encoders: list[CLIPTextModel | CLIPTextModelWithProjection] = [CLIPTextModel(_text_config(vocab_size, tokenizer))]
    if kind == "sdxl":
        shutil.copytree(folder / "tokenizer", folder / "tokenizer_2")
        encoders.append(CLIPTextModelWithProjection(_text_config(vocab_size, tokenizer)))
    components = {"unet": tiny_unet(kind), "vae": tiny_vae()}
    for name, model in components.items():
        model.save_pretrained(folder / name, safe_serialization=True)
    tiny_image_encoder().save_pretrained(folder / "image_encoder")
    for i, enc in enumerate(encoders):
        enc.save_pretrained(folder / f"text_encoder{'_2' if i else ''}")
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                  skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1).save_pretrained(folder / "scheduler")
    pipeline_class = "StableDiffusionXLPipeline" if kind == "sdxl" else "StableDiffusionPipeline"
    index = {"_class_name": pipeline_class, "_diffusers_version": "0.42.1",
             "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "PNDMScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "image_encoder": ["transformers", "CLIPVisionModelWithProjection"]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    if text == "prompt_embeds":
        tokenizers = [tokenizer] * len(encoders)
        cond, uncond = TextConditioner(tokenizers, encoders).encode("a photo of a face", "")
        tensors = {"prompt_embeds": cond.embeds, "negative_prompt_embeds": uncond.embeds}
        if cond.pooled is not None:
            assert uncond.pooled is not None  # both prompts are encoded by the same text encoders
            tensors.update(pooled_prompt_embeds=cond.pooled, negative_pooled_prompt_embeds=uncond.pooled)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / PROMPT_EMBEDS_FILE),
                  metadata={"prompt": "a photo of a face"})
        for sub in ("tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2"):
            shutil.rmtree(folder / sub, ignore_errors=True)
