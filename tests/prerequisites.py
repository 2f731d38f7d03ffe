"""The one way a test says a prerequisite is missing here: it skips locally and fails under `CI=true`.

A prerequisite is something outside the repository and its Python dependencies that a test needs to run at all:
Chromium for the report render, node/npm for the face-api reference, root (or user namespaces) for the mount and
permission tests. A skip in CI would let a check disappear unnoticed, so with `CI=true` (set by `.ci/run` and by
CI services) the same call fails the test with the reason. Data the repository ships (the London set, the demo
corpus) and declared dependencies are not prerequisites: their absence is a broken checkout and an error anywhere.
`tests/layout/test_prerequisites.py` checks that no test skips any other way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import NoReturn

import pytest

CI_ENV = "CI"


def in_ci() -> bool:
    """True when the tests run in CI (`CI=true`, or 1/yes): a missing prerequisite is then a failure."""
    return os.environ.get(CI_ENV, "").strip().lower() in ("true", "1", "yes")


def missing(why: str) -> NoReturn:
    """Skip the calling test (or fixture) because of `why`; under CI=true fail it instead."""
    if in_ci():
        pytest.fail(f"prerequisite missing under {CI_ENV}=true (a CI run never skips): {why}", pytrace=False)
    pytest.skip(why)


def require(condition: object, why: str) -> None:
    """Go on if `condition` holds; otherwise `missing(why)`: skip here, fail under CI=true."""
    if not condition:
        missing(why)


NOBODY = 65534  # the uid/gid a permission test run by root becomes


def nobody_can_use_this_python() -> bool:
    """True if, as `nobody`, this interpreter can read its installed packages (a venv in a 0700 temp folder
    cannot), as any other user of a shared install would. Only root can become `nobody`."""
    code = ("import os, sysconfig, fsspec; lib = sysconfig.get_paths()['purelib']; "
            f"os.setgid({NOBODY}); os.setuid({NOBODY}); os.listdir(lib); import fsspec.implementations.chained")
    if os.geteuid() != 0:
        return False
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def become_a_user_who_cannot_read() -> str:
    """Python statements (after `import os`) that make a subprocess a user for whom a folder of mode 000 is
    unreadable: `nobody` when this process is root (root reads every folder), nothing for any other user."""
    if os.geteuid() != 0:
        return ""
    require(nobody_can_use_this_python(), "run as root, this test becomes `nobody`, who must be able to read this "
                                          "Python's packages (a venv in a 0700 folder is not)")
    return f"os.setgid({NOBODY}); os.setuid({NOBODY}); "
