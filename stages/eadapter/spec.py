"""The E-Adapter's JSON config: its architecture, the layers it sits on, and the base UNet it was made for."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# UNet config keys that decide which weights exist and what shape they have. sample_size and the
# scheduler are left out on purpose: a fine-tune of SD1.5 at another resolution takes the same adapter.
ARCH_KEYS = (
    "in_channels", "out_channels", "block_out_channels", "down_block_types", "mid_block_type", "up_block_types",
    "layers_per_block", "transformer_layers_per_block", "cross_attention_dim", "attention_head_dim",
    "num_attention_heads", "use_linear_projection", "only_cross_attention", "upcast_attention",
    "class_embed_type", "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
    "time_cond_proj_dim", "norm_num_groups", "encoder_hid_dim", "reverse_transformer_layers_per_block",
)
IMAGE_ENCODER_KEYS = ("hidden_size", "projection_dim", "image_size", "patch_size", "num_hidden_layers",
                      "num_attention_heads", "intermediate_size", "num_channels")

FORMAT_VERSION = 1
CONFIG_NAME = "eadapter_config.json"
WEIGHTS_NAME = "eadapter.safetensors"
BRANCHES = ("identity", "expression")


class EAdapterError(ValueError):
    """Base class of the E-Adapter's errors."""


class EAdapterMismatchError(EAdapterError):
    """The adapter was made for another base UNet or image encoder."""


class EAdapterIntegrityError(EAdapterError):
    """The weight file does not have the sha256 recorded in the adapter config."""


def _canonical(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def unet_signature(unet_config: Any) -> dict[str, Any]:
    """Architecture description of a UNet2DConditionModel config, with its hash under `config_sha256`."""
    cfg = dict(unet_config)
    arch = {k: _canonical(cfg.get(k)) for k in ARCH_KEYS}
    digest = hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()
    return {"config_sha256": digest, "cross_attention_dim": arch["cross_attention_dim"],
            "block_out_channels": arch["block_out_channels"], "down_block_types": arch["down_block_types"]}


def image_encoder_signature(vision_config: Any) -> dict[str, Any]:
    """Architecture description of a CLIPVisionConfig, with its hash under `config_sha256`."""
    arch = {k: getattr(vision_config, k, None) for k in IMAGE_ENCODER_KEYS}
    arch["config_sha256"] = hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()
    return arch


@dataclass
class EAdapterConfig:
    """Everything needed to rebuild an adapter's modules and check it against a base model."""

    cross_attention_dim: int
    # layer name (attention module path, no ".processor") -> {"hidden_size": int, "branches": [...]}
    layers: dict[str, dict[str, Any]]
    base: dict[str, Any]  # unet_signature() of the base UNet
    image_encoder: dict[str, Any]  # image_encoder_signature() of the expression encoder
    identity_dim: int = 128
    identity_tokens: int = 4
    identity_mult: int = 2
    expression_features: Literal["hidden_states", "image_embeds"] = "hidden_states"
    expression_tokens: int = 16
    expression_depth: int = 2
    expression_heads: int = 8
    expression_dim_head: int = 64
    identity_patterns: list[str] = field(default_factory=list)
    expression_patterns: list[str] = field(default_factory=list)
    identity_scale: float = 1.0
    expression_scale: float = 1.0
    name: str = "eadapter"
    # how the weights came about: {"kind": "fresh", "seed": 0} or {"kind": "trained", "mode": ..., "steps": ...}
    provenance: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None
    format_version: int = FORMAT_VERSION

    def layers_for(self, branch: str) -> list[str]:
        return [name for name, spec in self.layers.items() if branch in spec["branches"]]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EAdapterConfig:
        data = json.loads(text)
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise EAdapterError(
                f"adapter config format_version {version!r} is not supported (expected {FORMAT_VERSION})")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise EAdapterError(f"adapter config has unknown keys {unknown}")
        return cls(**data)


def check_base(config: EAdapterConfig, unet_config: Any) -> None:
    """Raise EAdapterMismatchError when a UNet's architecture is not the one the adapter was made for."""
    have = unet_signature(unet_config)
    want = config.base
    if have["config_sha256"] != want["config_sha256"]:
        raise EAdapterMismatchError(
            f"adapter {config.name!r} was made for a UNet with cross_attention_dim={want['cross_attention_dim']}, "
            f"block_out_channels={want['block_out_channels']} (architecture hash {want['config_sha256'][:12]}), "
            f"but the base model's UNet has cross_attention_dim={have['cross_attention_dim']}, "
            f"block_out_channels={have['block_out_channels']} (hash {have['config_sha256'][:12]}); "
            "use an adapter trained for this base model or train one with pipeline/train_adapter.py")


def check_image_encoder(config: EAdapterConfig, vision_config: Any) -> None:
    """Raise EAdapterMismatchError when the expression image encoder is not the adapter's."""
    have = image_encoder_signature(vision_config)
    if have["config_sha256"] != config.image_encoder["config_sha256"]:
        raise EAdapterMismatchError(
            f"adapter {config.name!r} was made for an image encoder with hidden_size="
            f"{config.image_encoder.get('hidden_size')}, projection_dim={config.image_encoder.get('projection_dim')}, "
            f"image_size={config.image_encoder.get('image_size')}, but the one loaded has hidden_size="
            f"{have['hidden_size']}, projection_dim={have['projection_dim']}, image_size={have['image_size']}")
