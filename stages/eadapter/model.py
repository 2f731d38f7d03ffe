"""The E-Adapter: decoupled identity and expression branches beside a UNet's text cross-attention."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, cast

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.embeddings import (
    ImageProjection,
    IPAdapterFaceIDImageProjection,
    IPAdapterPlusImageProjection,
    MultiIPAdapterImageProjection,
)
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from transformers import CLIPVisionConfig

from core.hashing import sha256_bytes
from core.location import Location
from stages.eadapter import storage
from stages.eadapter.attention import EAdapterAttnProcessor, TextOnlyAttnProcessor
from stages.eadapter.layers import PROCESSOR_SUFFIX, cross_attention_layers, select_layers
from stages.eadapter.spec import (
    BRANCHES,
    CONFIG_NAME,
    WEIGHTS_NAME,
    EAdapterConfig,
    EAdapterError,
    EAdapterIntegrityError,
    check_base,
    check_image_encoder,
    image_encoder_signature,
    unet_signature,
)

DEFAULT_IDENTITY_LAYERS = ("*attn2",)
DEFAULT_EXPRESSION_LAYERS = ("up_blocks.*attn2",)


def _module_key(layer: str) -> str:
    return layer.replace(".", "__")


class EAdapter(nn.Module):
    """Identity MLP + expression resampler (both in `image_proj`) and one processor per adapted layer."""

    def __init__(self, config: EAdapterConfig) -> None:
        super().__init__()
        self.config = config
        cad = config.cross_attention_dim
        id_proj = IPAdapterFaceIDImageProjection(image_embed_dim=config.identity_dim, cross_attention_dim=cad,
                                                 mult=config.identity_mult, num_tokens=config.identity_tokens)
        enc = config.image_encoder
        if config.expression_features == "hidden_states":
            expr_proj: nn.Module = IPAdapterPlusImageProjection(
                embed_dims=enc["hidden_size"], output_dims=cad, hidden_dims=cad, depth=config.expression_depth,
                dim_head=config.expression_dim_head, heads=config.expression_heads,
                num_queries=config.expression_tokens, ffn_ratio=4)
        else:
            expr_proj = ImageProjection(image_embed_dim=enc["projection_dim"], cross_attention_dim=cad,
                                        num_image_text_embeds=config.expression_tokens)
        self.image_proj = MultiIPAdapterImageProjection([id_proj, expr_proj])
        tokens = {"identity": config.identity_tokens, "expression": config.expression_tokens}
        scales = {"identity": config.identity_scale, "expression": config.expression_scale}
        procs = {}
        for layer in sorted(config.layers):  # sorted: parameter (optimizer) order must survive save/load
            spec = config.layers[layer]
            branches = tuple(b for b in BRANCHES if b in spec["branches"])
            procs[_module_key(layer)] = EAdapterAttnProcessor(
                spec["hidden_size"], cad, branches, tuple(tokens[b] for b in branches),
                tuple(scales[b] for b in branches))
        self.processors = nn.ModuleDict(procs)
        self._weights_sha256: str | None = config.weights_sha256

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def create(cls, unet: UNet2DConditionModel, image_encoder_config: CLIPVisionConfig, *, identity_dim: int = 128,
               identity_tokens: int = 4, expression_tokens: int = 16,
               expression_features: Literal["hidden_states", "image_embeds"] = "hidden_states",
               identity_layers: Iterable[str] = DEFAULT_IDENTITY_LAYERS,
               expression_layers: Iterable[str] = DEFAULT_EXPRESSION_LAYERS, seed: int = 0, name: str = "eadapter",
               **arch: Any) -> EAdapter:
        """A freshly initialised adapter for `unet`; the same seed gives the same weights.

        As in IP-Adapter, each branch's to_k_ip / to_v_ip start as copies of the layer's text to_k / to_v.
        """
        cross = cross_attention_layers(unet)
        id_names = select_layers(cross, list(identity_layers), "identity")
        expr_names = select_layers(cross, list(expression_layers), "expression")
        layers = {}
        for layer, module in cross.items():
            branches = [b for b, names in (("identity", id_names), ("expression", expr_names)) if layer in names]
            if branches:
                layers[layer] = {"hidden_size": int(module.to_k.out_features), "branches": branches}
        if not layers:
            raise EAdapterError("no layer selected for either branch")
        config = EAdapterConfig(
            cross_attention_dim=int(unet.config.cross_attention_dim), layers=layers,
            base=unet_signature(unet.config), image_encoder=image_encoder_signature(image_encoder_config),
            identity_dim=identity_dim, identity_tokens=identity_tokens, expression_tokens=expression_tokens,
            expression_features=expression_features, identity_patterns=list(identity_layers),
            expression_patterns=list(expression_layers), name=name, provenance={"kind": "fresh", "seed": seed}, **arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            adapter = cls(config)
        with torch.no_grad():
            for layer, module in cross.items():
                if layer in layers:
                    proc = cast(EAdapterAttnProcessor, adapter.processors[_module_key(layer)])
                    for k_ip, v_ip in zip(proc.to_k_ip, proc.to_v_ip, strict=False):
                        k_ip.weight.copy_(module.to_k.weight)
                        v_ip.weight.copy_(module.to_v.weight)
        return adapter

    # ---- scales and attachment ----------------------------------------------------------------------
    def set_scale(self, identity: float | None = None, expression: float | None = None) -> None:
        """Per-branch scales on every adapted layer; 0 switches a branch off (exactly: it is skipped)."""
        if identity is not None:
            self.config.identity_scale = float(identity)
        if expression is not None:
            self.config.expression_scale = float(expression)
        scales = {"identity": self.config.identity_scale, "expression": self.config.expression_scale}
        for proc in self.processors.values():
            cast(EAdapterAttnProcessor, proc).set_branch_scales(scales)

    def attach(self, unet: UNet2DConditionModel) -> None:
        """Install the branch processors and the token projections on `unet` (same-architecture UNets only)."""
        check_base(self.config, unet.config)
        if unet.encoder_hid_proj is not None:
            raise EAdapterError("this UNet already has an encoder_hid_proj (another adapter is attached?)")
        cross = cross_attention_layers(unet)
        missing = sorted(set(self.config.layers) - set(cross))
        if missing:
            raise EAdapterError(f"adapter layers {missing[:3]} are not cross-attention layers of this UNet")
        procs = {}
        for key, proc in unet.attn_processors.items():
            layer = key[: -len(PROCESSOR_SUFFIX)]
            if layer in self.config.layers:
                procs[key] = self.processors[_module_key(layer)]
            elif layer in cross:
                procs[key] = TextOnlyAttnProcessor()
            else:
                procs[key] = proc
        unet.set_attn_processor(procs)
        unet._eadapter_hid_dim_type = unet.config.encoder_hid_dim_type  # restored by detach()
        unet.encoder_hid_proj = self.image_proj
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        param = next(unet.parameters())
        self.to(param.device, param.dtype)

    @staticmethod
    def detach(unet: UNet2DConditionModel) -> None:
        """Put the stock processors back and remove the projections."""
        procs = {}
        for key, proc in unet.attn_processors.items():
            adapted = isinstance(proc, (EAdapterAttnProcessor, TextOnlyAttnProcessor))
            procs[key] = AttnProcessor2_0() if adapted else proc
        unet.set_attn_processor(procs)
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = getattr(unet, "_eadapter_hid_dim_type", None)

    @staticmethod
    def added_cond_kwargs(identity_embeds: torch.Tensor, expression_features: torch.Tensor) -> dict[str, Any]:
        """UNet kwargs for (B, identity_dim) embeddings and (B, 1, ...) expression encoder features."""
        ident = identity_embeds if identity_embeds.ndim == 3 else identity_embeds.unsqueeze(1)
        return {"image_embeds": [ident, expression_features]}

    # ---- identity and persistence -------------------------------------------------------------------
    def _serialise(self) -> bytes:
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        # one metadata key only: safetensors writes a metadata map in arbitrary order, which would change the hash
        return save_safetensors(state, metadata={"format": "pt"})

    @property
    def adapter_sha256(self) -> str:
        """sha256 of the weight file save_pretrained writes (computed from memory when not yet saved)."""
        if self._weights_sha256 is None:
            self._weights_sha256 = sha256_bytes(self._serialise())
        return self._weights_sha256

    @property
    def adapter_id(self) -> str:
        return f"{self.config.name}@{self.adapter_sha256[:12]}"

    def mark_changed(self) -> None:
        """Forget the cached hash after the weights were trained."""
        self._weights_sha256 = None
        self.config.weights_sha256 = None

    def save_pretrained(self, url: Location | str | Path) -> str:
        """Write eadapter.safetensors + eadapter_config.json (with the weights' sha256) to a folder or URL (a
        Location: with its storage options)."""
        folder = Location.of(url)
        data = self._serialise()
        digest = sha256_bytes(data)
        self._weights_sha256 = digest
        self.config.weights_sha256 = digest
        storage.write_bytes(folder.join(WEIGHTS_NAME), data)
        storage.write_bytes(folder.join(CONFIG_NAME), self.config.to_json().encode())
        return digest

    @classmethod
    def from_pretrained(cls, url: Location | str | Path) -> EAdapter:
        """Load a folder or fsspec URL (a Location: with its storage options) written by save_pretrained; the
        weights' sha256 is verified."""
        folder = Location.of(url)
        cfg_file, w_file = folder.join(CONFIG_NAME), folder.join(WEIGHTS_NAME)
        cfg_url, w_url = cfg_file.url, w_file.url
        for what, f in (("config", cfg_file), ("weights", w_file)):
            if not storage.exists(f):
                raise FileNotFoundError(
                    f"E-Adapter {what} file missing: {f.url} (write it with EAdapter.save_pretrained)")
        config = EAdapterConfig.from_json(storage.read_bytes(cfg_file).decode())
        data = storage.read_bytes(w_file)
        digest = sha256_bytes(data)
        if not config.weights_sha256:
            raise EAdapterIntegrityError(f"{cfg_url} records no weights_sha256")
        if digest != config.weights_sha256:
            raise EAdapterIntegrityError(
                f"{w_url} has sha256 {digest}, but {CONFIG_NAME} records {config.weights_sha256}: "
                "the weights were changed or the copy is damaged")
        adapter = cls(config)
        adapter.load_state_dict(load_safetensors(data), strict=True)
        adapter._weights_sha256 = digest
        return adapter

    def check_image_encoder(self, vision_config: CLIPVisionConfig) -> None:
        check_image_encoder(self.config, vision_config)
