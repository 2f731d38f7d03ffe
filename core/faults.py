"""TESTING HOOKS: inject a real fault (exception, process exit, pause) at a chosen point.

Configured by `run.fault_injection` (FaultInjectionConfig below) and used only by the fault tests in
tests/hardening/. With the field unset (always, outside those tests) `maybe_inject` returns at once. Stages call
it for every ok row (stages/base.py, qc/stage.py); the commit stage calls it between a shard's files and its
commit marker (manifests/store.py `before_marker`, wired in pipeline/commit_stage.py). No Ray import.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import time
from typing import Literal

from pydantic import Field, model_validator

from core.config import Strict

FAULT_EXIT_CODE = 86


class FaultInjectionConfig(Strict):
    """TESTING HOOK (tests/hardening only): make one stage, or a commit, fail on a chosen item.

    at:     a stage name (ingest, expression_transfer, identity_swap, qc, or any RowwiseStage) or "commit"
            (the commit stage, after a manifest shard's files are written and before its commit marker).
    item:   fnmatch pattern over the item id: input_key in ingest, candidate_id after pairing, the shard name
            for "commit"; "*" matches every item.
    action: "raise"  an exception from the model call, as a broken model would (-> stage_error row);
            "exit"   os._exit(FAULT_EXIT_CODE) of the process (actor or driver), as a crash would;
            "pause"  create `marker`, then sleep, so a test can SIGKILL the driver at exactly this point;
            "pause_once" the same in the one process that creates `marker` first; later ones go on.
    marker: local file. With raise/exit the fault fires only in the process that creates it first (O_EXCL),
            so a restarted actor does not fail again on the retried batch; with pause it is the signal.
    Not part of the data fingerprint: a faulted run and its resume are the same run id as a clean one.
    """

    at: str
    item: str = "*"
    action: Literal["raise", "exit", "pause", "pause_once"]
    marker: str | None = None
    # action "raise" only: what is raised ("fault": a model bug, a permanent stage_error; the others are the
    # transient errors of stages/errors.py: a full disk, an I/O error, a storage timeout, MemoryError);
    # `fraction` of the matching items (chosen by a hash of item and point), only while the item's attempt is
    # at most `max_attempt` (None: every attempt). `at` may be a glob over stage names ("*": every stage).
    error: Literal["fault", "enospc", "eio", "timeout", "memory"] = "fault"
    fraction: float = Field(1.0, ge=0, le=1)
    seed: int = 0  # salt of the hash that picks the `fraction`
    max_attempt: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _pause_needs_marker(self) -> FaultInjectionConfig:
        if self.action in ("pause", "pause_once") and not self.marker:
            raise ValueError(f"fault_injection.marker is required with action {self.action!r}")
        return self


class InjectedFault(RuntimeError):
    """The exception raised by action "raise"; it stands for a model failing on one item."""


class InjectedTransientFault(TimeoutError):
    """error "timeout": a storage or network call timing out (transient, stages/errors.py)."""


def _error(fault: FaultInjectionConfig, at: str, item_id: str) -> BaseException:
    where = f"injected fault at {at} on item {item_id}"
    if fault.error == "enospc":
        return OSError(errno.ENOSPC, f"No space left on device ({where})")
    if fault.error == "eio":
        return OSError(errno.EIO, f"Input/output error ({where})")
    if fault.error == "timeout":
        return InjectedTransientFault(where)
    if fault.error == "memory":
        return MemoryError(where)
    return InjectedFault(where)


def targets(fault: FaultInjectionConfig | None, at: str, item_id: str | None, attempt: int | None = None) -> bool:
    """True if `fault` is aimed at point `at`, this item (pattern and fraction) and this attempt."""
    if fault is None or item_id is None:
        return False
    if fault.at != at and (at == "commit" or not fnmatch.fnmatchcase(at, fault.at)):
        return False
    if not fnmatch.fnmatchcase(item_id, fault.item):
        return False
    if fault.max_attempt is not None and (attempt or 1) > fault.max_attempt:
        return False
    if fault.fraction < 1.0:
        h = int(hashlib.sha256(f"{fault.seed}\0{at}\0{item_id}".encode()).hexdigest()[:8], 16) / 0x100000000
        return h < fault.fraction
    return True


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


def maybe_inject(fault: FaultInjectionConfig | None, at: str, item_id: str | None, attempt: int | None = None) -> None:
    """Act if `fault` targets point `at`, `item_id` and `attempt` (see `targets`); otherwise return."""
    if fault is None or not targets(fault, at, item_id, attempt):
        return
    if fault.action == "pause":
        _claim(fault.marker)  # type: ignore[arg-type]  # validated: pause has a marker
        while True:  # until the test kills us
            time.sleep(3600)
    if fault.action == "pause_once":  # only the first process to get here pauses (a node kill test)
        if _claim(fault.marker):  # type: ignore[arg-type]
            while True:
                time.sleep(3600)
        return
    if fault.marker and not _claim(fault.marker):
        return  # fired once already (e.g. before this actor was restarted)
    if fault.action == "raise":
        raise _error(fault, at, item_id or "")
    os._exit(FAULT_EXIT_CODE)
