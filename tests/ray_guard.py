"""Ray start-up only in tests marked `slow` (a pytest plugin, registered by tests/conftest.py).

The quick lane (`pytest -m "not slow" tests`) must not start Ray. This plugin makes any test NOT marked `slow`
fail, with a message naming the test, when Ray starts during it: in the pytest process or in any subprocess it
runs (`pipeline/run_idi.py`, `ciep run`, `ray start`...), even if the test catches the error or only checks an
exit code.

How, without a test hook in production code: Ray itself calls a user hook named by an environment variable at
every `ray.init` (`RAY_RUNTIME_ENV_HOOK`, called before any Ray process starts) and at every `ray start`
(`RAY_START_HOOK`). For the whole session (set in `pytest_configure`, so that even a copy of `os.environ` taken
at import time carries them) both point at the functions below, and `PYTHONPATH` gets the repository root so
that a subprocess can import them. Each function reads which test is running from a state file: during a test
that is not marked `slow` it appends a line to the violations file and raises; otherwise it lets Ray start
unchanged. After each test phase, `pytest_runtest_makereport` turns the phase into a failure if a violation was
recorded during it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
GUARD_DIR_ENV = "CIEP_TEST_RAY_GUARD"  # tests only: the folder with the state and violations files
HOOKS = {"RAY_RUNTIME_ENV_HOOK": f"{__name__}.refuse_ray_init", "RAY_START_HOOK": f"{__name__}.refuse_ray_start"}
CURRENT, VIOLATIONS = "current", "violations.log"  # file names in the guard folder
_FOLDER = pytest.StashKey[Path]()  # this session's guard folder
_OFFSET = pytest.StashKey[int]()  # bytes of the violations file already reported
_SAVED_ENV = pytest.StashKey[dict[str, str | None]]()


def refuse_ray_init(runtime_env: Any) -> Any:
    """RAY_RUNTIME_ENV_HOOK: called by every `ray.init` before Ray starts; returns `runtime_env` unchanged."""
    _refuse_outside_slow("ray.init")
    return runtime_env


def refuse_ray_start(ray_params: Any, head: bool) -> None:
    """RAY_START_HOOK: called by every `ray start` before the node starts."""
    _refuse_outside_slow("ray start --head" if head else "ray start")


def _refuse_outside_slow(what: str) -> None:
    folder = os.environ.get(GUARD_DIR_ENV)
    if not folder:
        return
    try:
        test = (Path(folder) / CURRENT).read_text().strip()
    except OSError:  # the session has ended (or this process may not read it): nothing to enforce
        return
    if not test:
        return
    line = f"{what} in pid {os.getpid()} ({' '.join(sys.argv)[:300]})"
    try:
        with open(Path(folder) / VIOLATIONS, "a") as fh:
            fh.write(line + "\n")
    except OSError:
        pass
    raise RuntimeError(f"{test} is not marked slow but starts Ray ({line}); mark it @pytest.mark.slow "
                       "(tests/ray_guard.py)")


def pytest_configure(config: pytest.Config) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ciep-ray-guard-"))
    folder.chmod(0o755)  # readable by the tests that run a subprocess as another user
    (folder / CURRENT).write_text("")
    (folder / VIOLATIONS).write_text("")
    (folder / VIOLATIONS).chmod(0o666)
    config.stash[_FOLDER] = folder
    config.stash[_SAVED_ENV] = {k: os.environ.get(k) for k in (GUARD_DIR_ENV, "PYTHONPATH", *HOOKS)}
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ.update(HOOKS)
    os.environ[GUARD_DIR_ENV] = str(folder)
    if str(REPO) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, paths)])


def pytest_unconfigure(config: pytest.Config) -> None:
    for key, value in config.stash.get(_SAVED_ENV, {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if _FOLDER in config.stash:
        shutil.rmtree(config.stash[_FOLDER], ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Ray may start during this test (setup of its fixtures included) only if it is marked slow."""
    current = item.config.stash[_FOLDER] / CURRENT
    current.write_text("" if item.get_closest_marker("slow") else item.nodeid)
    item.stash[_OFFSET] = (current.parent / VIOLATIONS).stat().st_size
    try:
        return (yield)
    finally:
        current.write_text("")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if _OFFSET not in item.stash:
        return report
    log = item.config.stash[_FOLDER] / VIOLATIONS
    with open(log) as fh:
        fh.seek(item.stash[_OFFSET])
        new = fh.read()
    item.stash[_OFFSET] += len(new.encode())
    if new:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} is not marked slow but started Ray ({call.when}):\n{new}"
                           "Every test that starts Ray (a round, ray.init, a subprocess running the pipeline, a "
                           "fixture such as ray_session / baseline_run / finished_run) is marked "
                           "@pytest.mark.slow; the quick lane is `pytest -m \"not slow\" tests`.")
    return report
