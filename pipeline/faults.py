"""TESTING HOOK: inject a real fault (exception, process exit, pause for a SIGKILL) on a chosen item.

Configured by `run.fault_injection` (pipeline/config.py FaultInjectionConfig) and used only by the fault tests in
tests/hardening/. With the field unset (always, outside those tests) `maybe_inject` returns at once. Stages call
it for every ok row (stages/base.py, qc/stage.py); the driver calls it between a shard's files and its commit
marker (manifests/store.py `before_marker`, wired in pipeline/run_idi.py). No Ray import: stages use it.
"""

from __future__ import annotations

import fnmatch
import os
import time

from pipeline.config import FaultInjectionConfig

FAULT_EXIT_CODE = 86


class InjectedFault(RuntimeError):
    """The exception raised by action "raise"; it stands for a model failing on one item."""


def _claim(marker: str) -> bool:
    """Create the marker exclusively; True for the one process that created it."""
    os.makedirs(os.path.dirname(os.path.abspath(marker)), exist_ok=True)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    return True


def maybe_inject(fault: FaultInjectionConfig | None, at: str, item_id: str | None) -> None:
    """Act if `fault` targets point `at` and `item_id`; otherwise return."""
    if fault is None or fault.at != at or item_id is None or not fnmatch.fnmatchcase(item_id, fault.item):
        return
    if fault.action == "pause":
        _claim(fault.marker)  # type: ignore[arg-type]  # validated: pause has a marker
        while True:  # until the test kills us
            time.sleep(3600)
    if fault.marker and not _claim(fault.marker):
        return  # fired once already (e.g. before this actor was restarted)
    if fault.action == "raise":
        raise InjectedFault(f"injected fault at {at} on item {item_id}")
    os._exit(FAULT_EXIT_CODE)
