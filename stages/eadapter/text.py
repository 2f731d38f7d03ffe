"""Text conditioning: CLIP text encoder(s) + tokenizer(s) from the base folder, or precomputed embeddings.

A base folder without tokenizer/ may ship `prompt_embeds.safetensors` instead, with tensors
  prompt_embeds (1, L, cross_attention_dim)           required
  negative_prompt_embeds (1, L, cross_attention_dim)  optional, zeros when absent
  pooled_prompt_embeds / negative_pooled_prompt_embeds (1, P)   SDXL-class bases only
and optionally the prompt text in the safetensors metadata key "prompt". The configured prompt is then
ignored: the file *is* the text condition (and is hashed into the base model's sha256).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from stages.eadapter.layout import TRANSFORMERS_WEIGHTS, BaseModelMissingError, require_component

PROMPT_EMBEDS_FILE = "prompt_embeds.safetensors"


@dataclass
class PromptEmbeds:
    embeds: torch.Tensor  # (1, L, D)
    pooled: torch.Tensor | None = None  # (1, P), SDXL-class only


class TextConditioner:
    """prompt -> (conditional, unconditional) PromptEmbeds; results are cached per prompt."""

    def __init__(self, tokenizers: list[CLIPTokenizer], encoders: Sequence[nn.Module],
                 precomputed: dict[str, torch.Tensor] | None = None) -> None:
        self.tokenizers = tokenizers
        self.encoders = encoders
        self.precomputed = precomputed
        self.sdxl_style = len(encoders) == 2 or (precomputed is not None and "pooled_prompt_embeds" in precomputed)
        self._cache: dict[tuple[str, str, str, str], tuple[PromptEmbeds, PromptEmbeds]] = {}

    def modules(self) -> list[nn.Module]:
        return list(self.encoders)

    def _encode_one(self, text: str, device: torch.device, dtype: torch.dtype) -> PromptEmbeds:
        if self.sdxl_style and text == "":  # diffusers' force_zeros_for_empty_prompt default for SDXL
            cond = self._encode_one(" ", device, dtype)
            pooled_zeros = None if cond.pooled is None else torch.zeros_like(cond.pooled)
            return PromptEmbeds(torch.zeros_like(cond.embeds), pooled_zeros)
        parts, pooled = [], None
        for tok, enc in zip(self.tokenizers, self.encoders, strict=False):
            ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(next(enc.parameters()).device)
            out = enc(ids, output_hidden_states=self.sdxl_style)
            if self.sdxl_style:
                parts.append(out.hidden_states[-2])
                pooled = getattr(out, "text_embeds", None)
            else:
                parts.append(out.last_hidden_state)
        embeds = torch.cat(parts, dim=-1).to(device, dtype)
        return PromptEmbeds(embeds, None if pooled is None else pooled.to(device, dtype))

    @torch.no_grad()
    def encode(self, prompt: str, negative_prompt: str = "", device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[PromptEmbeds, PromptEmbeds]:
        key = (prompt, negative_prompt, str(device), str(dtype))
        if key not in self._cache:
            if self.precomputed is not None:
                p = {k: v.to(device, dtype) for k, v in self.precomputed.items()}
                cond = PromptEmbeds(p["prompt_embeds"], p.get("pooled_prompt_embeds"))
                neg = p.get("negative_prompt_embeds", torch.zeros_like(cond.embeds))
                neg_pooled = p.get("negative_pooled_prompt_embeds")
                if cond.pooled is not None and neg_pooled is None:
                    neg_pooled = torch.zeros_like(cond.pooled)
                self._cache[key] = (cond, PromptEmbeds(neg, neg_pooled))
            else:
                dev = torch.device(device)
                self._cache[key] = (self._encode_one(prompt, dev, dtype), self._encode_one(negative_prompt, dev, dtype))
        return self._cache[key]


def load_text_conditioner(root: Path, dtype: torch.dtype = torch.float32) -> tuple[TextConditioner, list[Path]]:
    """The folder's text encoder(s) + tokenizer(s), else its prompt_embeds.safetensors; plus the files read."""
    if (root / "tokenizer").is_dir():
        files: list[Path] = []
        tokenizers, encoders = [], []
        for suffix, cls in (("", CLIPTextModel), ("_2", CLIPTextModelWithProjection)):
            tok_dir = root / f"tokenizer{suffix}"
            if not tok_dir.is_dir():
                break
            enc_files, variant = require_component(root, f"text_encoder{suffix}", "config.json", TRANSFORMERS_WEIGHTS)
            files += sorted(p for p in tok_dir.iterdir() if p.is_file()) + enc_files
            tokenizers.append(CLIPTokenizer.from_pretrained(tok_dir))
            encoders.append(cls.from_pretrained(root / f"text_encoder{suffix}", variant=variant, dtype=dtype))
        return TextConditioner(tokenizers, encoders), files
    path = root / PROMPT_EMBEDS_FILE
    if path.is_file():
        tensors = load_file(str(path))
        if "prompt_embeds" not in tensors:
            raise BaseModelMissingError(f"{path} has no 'prompt_embeds' tensor")
        return TextConditioner([], [], precomputed=tensors), [path]
    raise BaseModelMissingError(
        f"base model {root} has no text conditioning: put a CLIP tokenizer in {root / 'tokenizer'} and its text "
        f"encoder in {root / 'text_encoder'}, or precomputed embeddings in {path} (see stages/eadapter/text.py)")
