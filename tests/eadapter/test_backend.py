"""EAdapterTransferer on the tiny model: sizes, per-seed determinism, model identity, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest

from core.location import Location
from pipeline.config import PipelineConfig, config_from_dict
from stages.eadapter.backend import EAdapterTransferer
from stages.eadapter.base_model import BaseModelMissingError
from stages.eadapter.model import EAdapter
from stages.eadapter.spec import EAdapterMismatchError
from stages.face.protocols import ExpressionTransferer
from tests.eadapter.tiny_sd import make_requests, toy_embedder
from tests.s3_server import moto_s3


def _cfg(base: str | Path, **et: object) -> PipelineConfig:
    section = {"backend": "eadapter", "base_model": str(base), "num_inference_steps": 4, "device": "cpu",
               "resources": {"batch_size": 3}, **et}
    return config_from_dict({"expression_transfer": section})


def test_generates_right_size_deterministically_per_seed(tiny_sd: Path) -> None:
    tr = EAdapterTransferer.from_config(_cfg(tiny_sd).expression_transfer, embedder=toy_embedder)
    protocol: ExpressionTransferer = tr  # the structural type the pipeline uses
    assert callable(protocol.transfer) and protocol.model_id and protocol.model_sha256
    requests = make_requests(4, size=96)
    out = tr.transfer(requests)
    assert [o.shape for o in out] == [(96, 96, 3)] * 4 and all(o.dtype == np.uint8 for o in out)
    again = tr.transfer(requests)
    assert all(np.array_equal(a, b) for a, b in zip(out, again, strict=False))
    alone = tr.transfer(requests[1:2])[0]  # same seed, other batch composition
    assert np.abs(alone.astype(int) - out[1]).max() <= 2
    requests[1].seed += 1
    assert not np.array_equal(tr.transfer(requests[1:2])[0], out[1])
    assert tr.model_id == f"eadapter:{tr.adapter.adapter_id}" and tr.adapter.adapter_id.startswith("eadapter-fresh@")
    assert len(tr.model_sha256) == 64 and tr.lineage()["adapter_provenance"] == {"kind": "fresh", "seed": 0}


def test_saved_adapter_and_precomputed_prompt_embeds(tiny_sd_embeds: Path, tmp_path: Path) -> None:
    fresh = EAdapterTransferer.from_config(_cfg(tiny_sd_embeds, guidance_scale=1.0).expression_transfer,
                                           embedder=toy_embedder)
    fresh.adapter.save_pretrained(tmp_path / "adapter")
    loaded_cfg = _cfg(tiny_sd_embeds, guidance_scale=1.0, adapter=str(tmp_path / "adapter"))
    loaded = EAdapterTransferer.from_config(loaded_cfg.expression_transfer,
                                            embedder=toy_embedder)
    assert loaded.model_sha256 == fresh.model_sha256
    requests = make_requests(2, size=64)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.transfer(requests), loaded.transfer(requests), strict=False))


def test_adapter_on_s3_is_reached_with_the_run_folders_options(tiny_sd: Path, monkeypatch) -> None:
    """A later round's adapter lives under the run folder: the stage loads it with the run's storage options."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    fresh = EAdapterTransferer.from_config(_cfg(tiny_sd).expression_transfer, embedder=toy_embedder)
    with moto_s3("adapters") as server:
        run = Location("s3://adapters/runs/r1", server.opts)
        fresh.adapter.save_pretrained(run.join("adapters", "round-1"))
        cfg = _cfg(tiny_sd, adapter="s3://adapters/runs/r1/adapters/round-1").expression_transfer
        loaded = EAdapterTransferer.from_config(cfg, embedder=toy_embedder, storage=run)
        assert loaded.adapter_sha256 == fresh.adapter_sha256


def test_img2img_strength_and_fsspec_base(tiny_sd: Path, tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.put(str(tiny_sd) + "/", "/tiny-base/", recursive=True)
    cfg = _cfg("memory://tiny-base", strength=0.5, cache_dir=str(tmp_path / "cache"))
    tr = EAdapterTransferer.from_config(cfg.expression_transfer, embedder=toy_embedder)
    assert (tmp_path / "cache").is_dir() and tr.base.folder.is_relative_to(tmp_path / "cache")
    local = EAdapterTransferer.from_config(_cfg(tiny_sd, strength=0.5).expression_transfer, embedder=toy_embedder)
    assert tr.base_model_sha256 == local.base_model_sha256
    out = tr.transfer(make_requests(2, size=80))
    assert [o.shape for o in out] == [(80, 80, 3)] * 2


def test_missing_parts_are_named(tiny_sd: Path, tmp_path: Path) -> None:
    with pytest.raises(BaseModelMissingError, match=r"folder .*/nowhere does not exist; put a Stable Diffusion"):
        EAdapterTransferer.from_config(_cfg(tmp_path / "nowhere").expression_transfer, embedder=toy_embedder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelMissingError, match=r"empty/unet/config.json.*diffusers layout"):
        EAdapterTransferer.from_config(_cfg(tmp_path / "empty").expression_transfer, embedder=toy_embedder)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(BaseModelMissingError, match=r"unet/diffusion_pytorch_model.safetensors"):
        EAdapterTransferer.from_config(_cfg(broken).expression_transfer, embedder=toy_embedder)
    shutil.rmtree(broken)
    shutil.copytree(tiny_sd, broken)
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(BaseModelMissingError, match="prompt_embeds.safetensors"):
        EAdapterTransferer.from_config(_cfg(broken).expression_transfer, embedder=toy_embedder)


def test_adapter_for_another_base_is_refused(tiny_sd: Path, tiny_sdxl: Path, tmp_path: Path) -> None:
    xl = EAdapterTransferer.from_config(_cfg(tiny_sdxl).expression_transfer, embedder=toy_embedder)
    xl.adapter.save_pretrained(tmp_path / "xl")
    with pytest.raises(EAdapterMismatchError, match="made for a UNet"):
        EAdapterTransferer.from_config(_cfg(tiny_sd, adapter=str(tmp_path / "xl")).expression_transfer,
                                       embedder=toy_embedder)
    assert EAdapter.from_pretrained(tmp_path / "xl").adapter_id == xl.adapter.adapter_id


def test_default_identity_embedder_is_dlib(tiny_sd: Path) -> None:
    tr = EAdapterTransferer.from_config(_cfg(tiny_sd).expression_transfer)
    assert tr.embedder_id == "dlib_face_recognition_resnet_model_v1" and len(tr.embedder_sha256) == 64
    out = tr.transfer(make_requests(2, size=128))
    assert [o.shape for o in out] == [(128, 128, 3)] * 2
