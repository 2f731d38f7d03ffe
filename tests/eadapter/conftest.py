"""Session fixtures: tiny SD-shaped model folders written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from tests.models.tiny_eadapter import build_tiny_sd

transformers_logging.disable_progress_bar()
diffusers_logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd") / "sd15")


@pytest.fixture(scope="session")
def tiny_sd_embeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd_embeds") / "sd15", text="prompt_embeds")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sdxl") / "sdxl", kind="sdxl")
