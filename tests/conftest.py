"""Shared fixtures (the London set, one local Ray per test session, small corpora) and the `slow` rule: a test
that starts Ray is marked slow (tests/ray_guard.py enforces it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from benchmarks.london_faces import Face

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "data" / "demo_corpus"
LONDON = REPO / "data" / "faces" / "london"

pytest_plugins = ["tests.ray_guard"]  # Ray may start only in tests marked slow


def london_identities() -> list[str]:
    return sorted(p.name for p in DEMO_CORPUS.iterdir() if p.is_dir())


@pytest.fixture(scope="session")
def london_faces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Face]]:
    """The London set, identity -> expression -> FFHQ-aligned face (256 px), its landmarks and dlib embedding
    (benchmarks/london_faces.py), detected once per test session."""
    from benchmarks.london_faces import load_london
    return load_london(LONDON, cache=tmp_path_factory.mktemp("london") / "faces.npz")


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


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the session's Ray (`ray_session`, directly or through `baseline_run`, `finished_run`,
    `release`) is marked slow; a test that starts Ray another way carries the marker itself (tests/ray_guard.py
    fails it otherwise)."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


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
