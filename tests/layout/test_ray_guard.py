"""The quick lane's guard (tests/ray_guard.py) catches a Ray start in a test not marked slow: in the pytest
process, in a subprocess whose failure the test ignores, and in a subprocess whose environment was copied at
import time; a test marked slow is let through. Runs pytest on a small test file in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.ray_guard import GUARD_DIR_ENV, HOOKS, REPO

INIT = "import ray; ray.init(address='local', num_cpus=1, include_dashboard=False)"

TESTS = f'''
import os, subprocess, sys
import pytest

ENV = dict(os.environ)  # copied at import time, as some tests do

def test_in_process():
    import ray
    try:
        {INIT.split("; ")[1]}
    finally:
        assert not ray.is_initialized()

def test_in_a_subprocess_whose_failure_is_ignored():
    subprocess.run([sys.executable, "-c", "{INIT}"], capture_output=True)

def test_in_a_subprocess_with_an_environment_copied_at_import():
    subprocess.run([sys.executable, "-c", "{INIT}"], capture_output=True, env=ENV)

def test_without_ray():
    subprocess.run([sys.executable, "-c", "import ray"], check=True)

@pytest.mark.slow
def test_marked_slow_may_start_ray():
    from tests.ray_guard import refuse_ray_init, refuse_ray_start
    assert refuse_ray_init({{"env_vars": {{}}}}) == {{"env_vars": {{}}}}
    refuse_ray_start(None, True)
'''


def test_a_ray_start_outside_a_slow_test_fails_it(tmp_path: Path) -> None:
    (tmp_path / "test_guarded.py").write_text(TESTS)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.ray_guard"]\n')
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: starts Ray\n")
    env = {k: v for k, v in os.environ.items() if k not in (GUARD_DIR_ENV, *HOOKS)}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "3 failed, 2 passed" in text, text
    for name in ("test_in_process", "test_in_a_subprocess_whose_failure_is_ignored",
                 "test_in_a_subprocess_with_an_environment_copied_at_import"):
        assert f"test_guarded.py::{name} is not marked slow but started Ray (call):" in text, (name, text)
    # three Ray starts, each in a process of its own (pytest may print each failure twice: the report and, under
    # CI=true, the untruncated short summary)
    assert len(set(re.findall(r"ray\.init in pid (\d+)", text))) == 3, text
