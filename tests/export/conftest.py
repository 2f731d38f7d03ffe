from __future__ import annotations

import pytest

from tests.finished_run import FinishedRun, get_finished_run, get_release


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, ray_session) -> FinishedRun:
    return get_finished_run(tmp_path_factory)


@pytest.fixture(scope="session")
def release(finished_run):
    return get_release(finished_run)
