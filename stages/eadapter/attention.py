"""Attention processors: diffusers' IP-Adapter processor restricted to one or both E-Adapter branches.

The UNet hands every cross-attention layer `encoder_hidden_states=(text, [identity_tokens, expression_tokens])`
(diffusers' "ip_image_proj" convention). A branch layer keeps only its own token sets, each with its own
to_k_ip/to_v_ip and scale; a cross-attention layer with no branch drops them and runs the stock processor.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0

from stages.eadapter.spec import BRANCHES


class EAdapterAttnProcessor(IPAdapterAttnProcessor2_0):
    """IPAdapterAttnProcessor2_0 with one key/value projection pair and one scale per branch it carries."""

    def __init__(self, hidden_size: int, cross_attention_dim: int, branches: tuple[str, ...],
                 num_tokens: tuple[int, ...], scales: tuple[float, ...]) -> None:
        if not branches or any(b not in BRANCHES for b in branches):
            raise ValueError(f"branches must be a non-empty subset of {BRANCHES}, got {branches}")
        super().__init__(hidden_size, cross_attention_dim, num_tokens=list(num_tokens), scale=list(scales))
        self.branches = tuple(branches)
        self.branch_indices = tuple(BRANCHES.index(b) for b in branches)

    def set_branch_scales(self, scales: dict[str, float]) -> None:
        self.scale = [float(scales[b]) for b in self.branches]

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, scale: float = 1.0,
                 ip_adapter_masks: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(encoder_hidden_states, tuple):
            raise ValueError("an E-Adapter layer needs encoder_hidden_states=(text, [identity, expression]); "
                             "pass added_cond_kwargs={'image_embeds': [...]} to the UNet")
        text, ip_states = encoder_hidden_states
        if len(ip_states) != len(BRANCHES):
            raise ValueError(f"expected {len(BRANCHES)} IP token sets {BRANCHES}, got {len(ip_states)}")
        selected = [ip_states[i] for i in self.branch_indices]
        return super().__call__(attn, hidden_states, (text, selected), attention_mask, temb, scale, ip_adapter_masks)


class TextOnlyAttnProcessor(AttnProcessor2_0):
    """The stock AttnProcessor2_0 for cross-attention layers without a branch: it ignores the IP tokens."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: object, **kwargs: object) -> torch.Tensor:
        if isinstance(encoder_hidden_states, tuple):
            encoder_hidden_states = encoder_hidden_states[0]
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
