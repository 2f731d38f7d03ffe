"""Shared fixtures: real London faces, one local Ray per test session, small corpora."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "data" / "demo_corpus"
LONDON = REPO / "data" / "faces" / "london"


def london_identities() -> list[str]:
    return sorted(p.name for p in DEMO_CORPUS.iterdir() if p.is_dir())


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (2 CPUs, like CI)."""
    import ray
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def make_corpus(dest: Path, identities: list[str]) -> Path:
    """Copy demo identities into a fresh corpus folder."""
    dest.mkdir(parents=True, exist_ok=True)
    for ident in identities:
        shutil.copytree(DEMO_CORPUS / ident, dest / ident)
    return dest


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus", london_identities()[:4])


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch):
    monkeypatch.setenv("CIEP_PROGRESS_BARS", os.environ.get("CIEP_PROGRESS_BARS", "0"))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, ray_session):
    """One real run (made once per test session) for the release, export and report tests."""
    from tests.finished_run import get_finished_run
    return get_finished_run(tmp_path_factory)


@pytest.fixture(scope="session")
def baseline_run(tmp_path_factory, ray_session):
    """One clean one-round run of 3 identities (made once per test session) for the round, fault, nothing-lost,
    redecide and multi-node tests."""
    from tests.baseline_run import get_baseline_run
    return get_baseline_run(tmp_path_factory)


@pytest.fixture(scope="session")
def release(finished_run):
    from tests.finished_run import get_release
    return get_release(finished_run)
