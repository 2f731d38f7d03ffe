"""E-Adapter model: layer placement, scale-0 equivalence, save/load, base and integrity checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from stages.eadapter.attention import EAdapterAttnProcessor, TextOnlyAttnProcessor
from stages.eadapter.base_model import BaseModel, load_base_model
from stages.eadapter.image_encoder import ExpressionEncoder
from stages.eadapter.model import EAdapter
from stages.eadapter.spec import EAdapterError, EAdapterIntegrityError, EAdapterMismatchError
from tests.models.tiny_eadapter import tiny_unet

EXPR_LAYERS = ("up_blocks.1.*attn2",)
ID_LAYERS = ("down_blocks.*attn2", "mid_block.*attn2")


def _inputs(base: BaseModel, batch: int = 2, seed: int = 0, features: str = "hidden_states") -> tuple:
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, 16, 16, generator=g)
    t = torch.tensor([20, 700][:batch])
    cond, _ = base.text.encode("a photo of a face")
    text = cond.embeds.expand(batch, -1, -1)
    images = (torch.rand(batch, 64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
    expr = ExpressionEncoder(base.image_encoder, features).encode(list(images))
    ident = torch.nn.functional.normalize(torch.randn(batch, 128, generator=g), dim=-1)
    added = EAdapter.added_cond_kwargs(ident, expr)
    if base.unet.config.addition_embed_type == "text_time":
        added.update(text_embeds=cond.pooled.expand(batch, -1), time_ids=torch.tensor([[64, 64, 0, 0, 64, 64]] * batch))
    return sample, t, text, added


def _plain_kwargs(added: dict) -> dict:
    return {k: v for k, v in added.items() if k != "image_embeds"}


@pytest.fixture()
def base(tiny_sd: Path) -> BaseModel:
    return load_base_model(tiny_sd)


def test_processors_sit_exactly_on_configured_layers(base: BaseModel) -> None:
    adapter = EAdapter.create(base.unet, base.image_encoder.config, identity_layers=ID_LAYERS,
                              expression_layers=EXPR_LAYERS)
    adapter.attach(base.unet)
    seen = {}
    for key, proc in base.unet.attn_processors.items():
        layer = key.removesuffix(".processor")
        if layer.startswith("encoder_hid_proj."):
            continue
        if layer.endswith("attn1"):
            assert type(proc) is AttnProcessor2_0, layer
            continue
        wanted = (("identity", ("down_blocks.", "mid_block.")), ("expression", ("up_blocks.1.",)))
        expect = tuple(b for b, pats in wanted if layer.startswith(pats))
        if expect:
            assert isinstance(proc, EAdapterAttnProcessor) and proc.branches == expect, layer
            assert len(proc.to_k_ip) == len(expect) == len(proc.scale)
        else:
            assert type(proc) is TextOnlyAttnProcessor and isinstance(proc, AttnProcessor2_0), layer
        seen[layer] = expect
    assert sum(1 for v in seen.values() if "expression" in v) == 2  # up_blocks.1 has two attentions
    assert any(not v for v in seen.values())  # up_blocks.0 has neither branch
    EAdapter.detach(base.unet)
    assert all(type(p) is AttnProcessor2_0 for p in base.unet.attn_processors.values())


def test_pattern_that_matches_nothing_is_an_error(base: BaseModel) -> None:
    with pytest.raises(EAdapterError, match="matches no cross-attention layer"):
        EAdapter.create(base.unet, base.image_encoder.config, expression_layers=("upblocks.*attn2",))


def test_scale_zero_reproduces_plain_unet_exactly(base: BaseModel) -> None:
    plain = copy.deepcopy(base.unet)
    sample, t, text, added = _inputs(base)
    with torch.no_grad():
        ref = plain(sample, t, encoder_hidden_states=text).sample
        adapter = EAdapter.create(base.unet, base.image_encoder.config)
        adapter.attach(base.unet)
        on = base.unet(sample, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
        adapter.set_scale(identity=0.0, expression=0.0)
        off = base.unet(sample, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
        adapter.set_scale(identity=0.0, expression=1.0)
        expr_only = base.unet(sample, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
    assert torch.equal(off, ref)
    assert not torch.allclose(on, ref, atol=1e-4)
    assert not torch.allclose(expr_only, ref, atol=1e-4) and not torch.allclose(expr_only, on, atol=1e-4)


def test_fresh_adapter_is_deterministic_per_seed(base: BaseModel) -> None:
    a = EAdapter.create(base.unet, base.image_encoder.config, seed=3)
    b = EAdapter.create(base.unet, base.image_encoder.config, seed=3)
    c = EAdapter.create(base.unet, base.image_encoder.config, seed=4)
    assert a.adapter_sha256 == b.adapter_sha256 != c.adapter_sha256
    assert a.config.provenance == {"kind": "fresh", "seed": 3}


@pytest.mark.parametrize("url_kind", ["local", "memory"])
def test_save_load_gives_identical_outputs(base: BaseModel, tmp_path: Path, url_kind: str) -> None:
    adapter = EAdapter.create(base.unet, base.image_encoder.config, seed=1, identity_layers=ID_LAYERS,
                              expression_layers=EXPR_LAYERS)
    with torch.no_grad():  # make the weights differ from the text to_k / to_v copies
        for p in adapter.parameters():
            p.add_(0.01 * torch.randn_like(p))
    adapter.mark_changed()
    url = str(tmp_path / "adapter") if url_kind == "local" else f"memory://eadapter-test/{tmp_path.name}"
    digest = adapter.save_pretrained(url)
    assert digest == adapter.adapter_sha256 and adapter.adapter_id.endswith(digest[:12])
    sample, t, text, added = _inputs(base)
    adapter.attach(base.unet)
    with torch.no_grad():
        out1 = base.unet(sample, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
    EAdapter.detach(base.unet)
    loaded = EAdapter.from_pretrained(url)
    assert loaded.adapter_sha256 == digest and loaded.adapter_id == adapter.adapter_id
    assert loaded.config.layers == adapter.config.layers
    loaded.attach(base.unet)
    with torch.no_grad():
        out2 = base.unet(sample, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
    assert torch.equal(out1, out2)


def test_mismatched_base_is_refused(base: BaseModel, tmp_path: Path) -> None:
    adapter = EAdapter.create(base.unet, base.image_encoder.config)
    adapter.save_pretrained(tmp_path / "a")
    other = tiny_unet("sdxl")  # other cross_attention_dim and added conditioning
    with pytest.raises(EAdapterMismatchError, match="cross_attention_dim=32.*cross_attention_dim=64"):
        EAdapter.from_pretrained(tmp_path / "a").attach(other)


def test_tampered_weights_are_refused(base: BaseModel, tmp_path: Path) -> None:
    EAdapter.create(base.unet, base.image_encoder.config).save_pretrained(tmp_path / "a")
    weights = tmp_path / "a" / "eadapter.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(EAdapterIntegrityError, match="sha256"):
        EAdapter.from_pretrained(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="eadapter_config.json"):
        EAdapter.from_pretrained(tmp_path / "nothing-here")


def test_sdxl_class_is_a_config_change(tiny_sdxl: Path, tmp_path: Path) -> None:
    base = load_base_model(tiny_sdxl)
    plain = copy.deepcopy(base.unet)
    sample, t, text, added = _inputs(base, features="image_embeds")
    adapter = EAdapter.create(base.unet, base.image_encoder.config, expression_features="image_embeds",
                              identity_tokens=2, expression_tokens=4)
    assert adapter.config.cross_attention_dim == 64
    adapter.save_pretrained(tmp_path / "xl")
    loaded = EAdapter.from_pretrained(tmp_path / "xl")
    loaded.attach(base.unet)
    with torch.no_grad():
        on = base.unet(sample, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
        loaded.set_scale(0.0, 0.0)
        off = base.unet(sample, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
        ref = plain(sample, t, encoder_hidden_states=text, added_cond_kwargs=_plain_kwargs(added)).sample
    assert torch.equal(off, ref) and not torch.allclose(on, ref, atol=1e-4)
