"""The frozen CLIP image encoder of the expression branch and its input preprocessing."""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
import torch
from transformers import CLIPVisionModelWithProjection

# OpenAI CLIP normalisation, what every SD / IP-Adapter image encoder was trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ExpressionEncoder:
    """Masked, aligned face crops (uint8 RGB) -> CLIP features: penultimate hidden states or image embeds."""

    def __init__(self, model: CLIPVisionModelWithProjection,
                 features: Literal["hidden_states", "image_embeds"] = "hidden_states") -> None:
        self.model = model.eval().requires_grad_(False)
        self.features = features
        self.image_size = int(cast(int, model.config.image_size))  # an int for CLIP vision configs

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def preprocess(self, images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) images -> normalised (B, 3, S, S) float tensor on the encoder's device."""
        batch = torch.stack([torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images])
        batch = batch.to(self.device, torch.float32) / 255.0
        if batch.shape[-1] != self.image_size or batch.shape[-2] != self.image_size:
            batch = torch.nn.functional.interpolate(batch, size=(self.image_size, self.image_size), mode="bicubic",
                                                    align_corners=False, antialias=True).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        return ((batch - mean) / std).to(self.dtype)

    @torch.no_grad()
    def encode(self, images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
        """(B, 1, L, hidden) penultimate hidden states or (B, 1, projection_dim) image embeds."""
        out = self.model(pixel_values=self.preprocess(images), output_hidden_states=self.features == "hidden_states")
        feats = out.hidden_states[-2] if self.features == "hidden_states" else out.image_embeds
        return feats.unsqueeze(1)
