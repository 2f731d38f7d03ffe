"""TESTING HOOKS: inject a real fault (exception, process exit, pause, SIGKILL after a commit) at a chosen point.

Configured by `run.fault_injection` (FaultInjectionConfig below) and used only by the fault tests in
tests/hardening/. With the field unset (always, outside those tests) `maybe_inject` returns at once. Stages call
it for every ok row (stages/base.py, qc/stage.py); the driver calls it between a shard's files and its commit
marker (manifests/store.py `before_marker`, wired in pipeline/run_idi.py). No Ray import: stages use it.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import time
from collections import Counter
from typing import Literal

from pydantic import model_validator

from core.config import Strict

FAULT_EXIT_CODE = 86


class FaultInjectionConfig(Strict):
    """TESTING HOOK (tests/hardening only): make one stage, or the driver's commit, fail on a chosen item.

    at:     a stage name (ingest, expression_transfer, identity_swap, qc, or any RowwiseStage) or "commit"
            (the driver, after a manifest shard's files are written and before its commit marker).
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

    @model_validator(mode="after")
    def _pause_needs_marker(self) -> FaultInjectionConfig:
        if self.action in ("pause", "pause_once") and not self.marker:
            raise ValueError(f"fault_injection.marker is required with action {self.action!r}")
        return self


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
    if fault.action == "pause_once":  # only the first process to get here pauses (a node kill test)
        if _claim(fault.marker):  # type: ignore[arg-type]
            while True:
                time.sleep(3600)
        return
    if fault.marker and not _claim(fault.marker):
        return  # fired once already (e.g. before this actor was restarted)
    if fault.action == "raise":
        raise InjectedFault(f"injected fault at {at} on item {item_id}")
    os._exit(FAULT_EXIT_CODE)


# Driver-side hook, set by environment so that a test can kill a child driver at an exact point:
# "<shard prefix>:<N>" (e.g. "gen-r0-:2") SIGKILLs the driver right after its N-th commit of shards with that
# prefix (pipeline/commit.py). Unset in normal use.
KILL_AFTER_COMMITS_ENV = "CIEP_FAULT_KILL_AFTER_COMMITS"
_commits_seen: Counter = Counter()


def kill_after_commit(prefix: str) -> None:
    """SIGKILL this process after the N-th commit of `prefix` shards, when KILL_AFTER_COMMITS_ENV asks."""
    spec = os.environ.get(KILL_AFTER_COMMITS_ENV)
    if not spec:
        return
    wanted, _, n = spec.rpartition(":")
    if prefix == wanted:
        _commits_seen[prefix] += 1
        if _commits_seen[prefix] >= int(n):
            os.kill(os.getpid(), signal.SIGKILL)
