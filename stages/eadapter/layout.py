"""Where a diffusers-layout folder keeps each component, and clear errors when one is missing."""

from __future__ import annotations

import json
from pathlib import Path

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
TRANSFORMERS_WEIGHTS = "model"
HOWTO = ("put a Stable Diffusion model in diffusers layout there (e.g. `huggingface-cli download "
         "stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir FOLDER` on a machine with network) and a "
         "CLIPVisionModelWithProjection in FOLDER/image_encoder/, then set expression_transfer.base_model")


class BaseModelMissingError(FileNotFoundError):
    """A folder, config or weight file of the base model is missing."""


def weight_files(folder: Path, stem: str) -> tuple[list[Path], str | None]:
    """The safetensors files of one component and the diffusers variant they need (None or "fp16")."""
    for variant in (None, "fp16"):
        name = f"{stem}.{variant}.safetensors" if variant else f"{stem}.safetensors"
        if (folder / name).is_file():
            return [folder / name], variant
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [index, *(folder / s for s in shards)], variant
    raise BaseModelMissingError(
        f"no weights in {folder}: expected {folder / (stem + '.safetensors')} (or its .fp16 / sharded form)")


def require_component(root: Path, sub: str, config_name: str, stem: str | None) -> tuple[list[Path], str | None]:
    """Config + weight files of root/sub, or BaseModelMissingError naming what is missing and where."""
    folder = root / sub
    if not (folder / config_name).is_file():
        raise BaseModelMissingError(
            f"base model is missing {folder / config_name}; {HOWTO.replace('FOLDER', str(root))}")
    try:
        files, variant = weight_files(folder, stem) if stem else ([], None)
    except BaseModelMissingError as err:
        raise BaseModelMissingError(f"{err}; {HOWTO.replace('FOLDER', str(root))}") from None
    return [folder / config_name, *files], variant
