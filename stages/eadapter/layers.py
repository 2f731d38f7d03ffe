"""Pick a UNet's cross-attention layers by glob patterns, e.g. "up_blocks.*attn2" or "mid_block.*"."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from stages.eadapter.spec import EAdapterError

PROCESSOR_SUFFIX = ".processor"


def cross_attention_layers(unet: UNet2DConditionModel) -> dict[str, Attention]:
    """Cross-attention modules by module path (the attn_processors key without ".processor"), in UNet order."""
    out: dict[str, Attention] = {}
    for key in unet.attn_processors:
        name = key[: -len(PROCESSOR_SUFFIX)]
        if name.startswith("encoder_hid_proj."):  # the adapter's own resampler, once attached
            continue
        module = unet.get_submodule(name)
        if isinstance(module, Attention) and module.is_cross_attention:
            out[name] = module
    return out


def select_layers(names: Iterable[str], patterns: Iterable[str], what: str) -> list[str]:
    """Names matching any pattern; a pattern that matches nothing is an error (it is most likely a typo)."""
    names = list(names)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatchcase(n, pattern)]
        if not hits:
            raise EAdapterError(f"{what} layer pattern {pattern!r} matches no cross-attention layer; "
                                f"layers are named like {names[0]!r}" if names else "the UNet has no cross-attention")
        chosen.extend(h for h in hits if h not in chosen)
    return [n for n in names if n in chosen]
