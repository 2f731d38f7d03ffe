"""EAdapterTransferer: the diffusion expression-transfer backend (ExpressionTransferer protocol)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.location import Location
from stages.config import ExpressionTransferConfig
from stages.eadapter.base_model import BaseModel, load_base_model, resolve_device
from stages.eadapter.conditions import EmbedderLike, embed_identity, masked_face
from stages.eadapter.image_encoder import ExpressionEncoder
from stages.eadapter.model import EAdapter
from stages.eadapter.sampler import encode, generate, initial_noise, make_scheduler
from stages.face.protocols import TransferRequest


def default_embedder() -> EmbedderLike:
    """The dlib face-recognition embedder (128-d), the identity condition the adapter is trained with."""
    try:
        from stages.face.dlib_models import DlibEmbedder
    except ImportError as err:
        raise RuntimeError("stages.face.dlib_models is not available; pass embedder=... to "
                           "EAdapterTransferer.from_config") from err
    return DlibEmbedder.from_config()


def build_adapter(et: ExpressionTransferConfig, base: BaseModel, storage: Location | None = None) -> EAdapter:
    """The configured adapter (reached with `storage`'s options: a trained round's adapter lives under the run
    folder), or (adapter: null) a fresh one from et.adapter_seed, named "eadapter-fresh"."""
    if et.adapter:
        return EAdapter.from_pretrained(storage.at(et.adapter) if storage is not None else et.adapter)
    return EAdapter.create(base.unet, base.image_encoder.config, identity_dim=et.identity_dim,
                           identity_tokens=et.identity_tokens, expression_tokens=et.expression_tokens,
                           expression_features=et.expression_features, identity_layers=et.identity_layers,
                           expression_layers=et.expression_layers, seed=et.adapter_seed, name="eadapter-fresh")


class EAdapterTransferer:
    """Generate identity j (carrier embedding) with T's expression (masked aligned face), one seed per request."""

    def __init__(self, base: BaseModel, adapter: EAdapter, embedder: EmbedderLike,
                 settings: ExpressionTransferConfig) -> None:
        self.base = base
        self.adapter = adapter
        self.embedder = embedder
        self.settings = settings
        adapter.check_image_encoder(base.image_encoder.config)
        adapter.attach(base.unet)
        adapter.set_scale(identity=settings.identity_scale, expression=settings.expression_scale)
        adapter.eval().requires_grad_(False)
        self.encoder = ExpressionEncoder(base.image_encoder, adapter.config.expression_features)
        self.scheduler = make_scheduler(base.scheduler_config)
        self.resolution = settings.resolution or base.default_resolution
        self.batch_size = settings.resources.batch_size
        self.adapter_sha256 = adapter.adapter_sha256
        self.base_model_sha256 = base.sha256
        self.embedder_id = str(getattr(embedder, "model_id", type(embedder).__name__))
        self.embedder_sha256 = str(getattr(embedder, "model_sha256", ""))
        self.model_id = f"eadapter:{adapter.adapter_id}"
        parts = f"adapter={self.adapter_sha256}\nbase={self.base_model_sha256}\nembedder={self.embedder_sha256}\n"
        self.model_sha256 = hashlib.sha256(parts.encode()).hexdigest()

    @classmethod
    def from_config(cls, et: ExpressionTransferConfig, embedder: EmbedderLike | None = None,
                    storage: Location | None = None) -> EAdapterTransferer:
        """Load base model + adapter from the expression_transfer section; fp16 on CUDA, fp32 on CPU."""
        if not et.base_model:
            raise ValueError("expression_transfer.base_model is required with backend 'eadapter'")
        device = resolve_device(et.device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        base = load_base_model(et.base_model, device=device, dtype=dtype, image_encoder=et.image_encoder,
                               cache_dir=et.cache_dir)
        return cls(base, build_adapter(et, base, storage), embedder if embedder is not None else default_embedder(),
                   et)

    def lineage(self) -> dict[str, Any]:
        """What produced the images, for manifest rows."""
        return {"model_id": self.model_id, "model_sha256": self.model_sha256, "adapter_id": self.adapter.adapter_id,
                "adapter_sha256": self.adapter_sha256, "adapter_provenance": dict(self.adapter.config.provenance),
                "base_model": self.settings.base_model, "base_model_sha256": self.base_model_sha256,
                "embedder_id": self.embedder_id, "embedder_sha256": self.embedder_sha256}

    def _square(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.shape[0] == rgb.shape[1] == self.resolution:
            return rgb
        return np.asarray(Image.fromarray(rgb).resize((self.resolution, self.resolution), Image.Resampling.BICUBIC))

    def _conditions(self, requests: list[TransferRequest]) -> list[torch.Tensor]:
        ids = np.stack([embed_identity(self.embedder, r.carrier_rgb, r.carrier_landmarks) for r in requests])
        if ids.shape[1] != self.adapter.config.identity_dim:
            raise ValueError(f"the embedder gives {ids.shape[1]}-d identity embeddings, the adapter expects "
                             f"{self.adapter.config.identity_dim}-d")
        expr = self.encoder.encode([masked_face(r.target_rgb, r.target_landmarks) for r in requests])
        ident = torch.from_numpy(ids).to(self.base.device, self.base.dtype)
        return EAdapter.added_cond_kwargs(ident, expr)["image_embeds"]

    def _run(self, requests: list[TransferRequest]) -> list[np.ndarray]:
        base, et = self.base, self.settings
        image_embeds = self._conditions(requests)
        cond, uncond = base.text.encode(et.prompt, "", device=base.device, dtype=base.dtype)
        side = self.resolution // base.vae_scale_factor
        noise = initial_noise([r.seed for r in requests], (base.unet.config.in_channels, side, side),
                              base.device, base.dtype)
        init = None
        if et.strength < 1.0:
            carriers = np.stack([self._square(r.carrier_rgb) for r in requests])
            pixels = torch.from_numpy(carriers).permute(0, 3, 1, 2).to(base.device, torch.float32) / 127.5 - 1
            init = encode(base.vae, pixels).to(base.dtype)
        images = generate(base.unet, base.vae, self.scheduler, noise=noise, cond=cond, uncond=uncond,
                          image_embeds=image_embeds, steps=et.num_inference_steps, guidance_scale=et.guidance_scale,
                          init_latents=init, strength=et.strength)
        out = []
        for req, img in zip(requests, images, strict=False):
            h, w = req.carrier_rgb.shape[:2]
            if img.shape[:2] != (h, w):
                img = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.LANCZOS))
            out.append(np.ascontiguousarray(img, dtype=np.uint8))
        return out

    def transfer(self, requests: list[TransferRequest]) -> list[np.ndarray]:
        """One uint8 RGB image per request, at the carrier crop's size, in batches of resources.batch_size."""
        out: list[np.ndarray] = []
        for i in range(0, len(requests), self.batch_size):
            out.extend(self._run(requests[i:i + self.batch_size]))
        return out
