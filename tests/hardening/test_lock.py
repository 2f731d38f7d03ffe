"""The run-folder lock (manifests/lock.py) with real processes: exactly one of several simultaneous drivers wins,
the others get a clear error; a dead holder's lock is taken over by exactly one; a live one never is."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from manifests.lock import LOCK_NAME, RunLock, RunLockedError


def _contender(run_url: str, start, done, results) -> None:
    start.wait(120)  # every contender has started and imported: they all try at once
    try:
        lock = RunLock(run_url).acquire()
    except RunLockedError as err:
        results.put(("refused", os.getpid(), str(err)))
        return
    results.put(("won", os.getpid(), ""))
    done.wait(120)  # hold it until every contender has had its try, however slowly they ran
    lock.release()


def _race(run_url: str, n: int = 6) -> list[tuple]:
    """Start `n` processes that try to take the lock at the same moment (a barrier); a winner holds it until all
    `n` have reported, so no contender can come late and find it free."""
    ctx = mp.get_context("spawn")
    results, start, done = ctx.Queue(), ctx.Barrier(n), ctx.Event()
    procs = [ctx.Process(target=_contender, args=(run_url, start, done, results)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=180) for _ in range(n)]
    finally:
        done.set()
        for p in procs:
            p.join(60)
    assert [p.exitcode for p in procs] == [0] * n
    return out


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(run: Path, **holder) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / LOCK_NAME).write_text(json.dumps(dict(token="x", acquired_at="then", **holder)))


def test_simultaneous_drivers_exactly_one_wins(tmp_path: Path):
    out = _race(str(tmp_path / "run"))
    won = [r for r in out if r[0] == "won"]
    assert len(won) == 1, out
    for _, _pid, msg in (r for r in out if r[0] == "refused"):
        assert f"pid {won[0][1]} on host {socket.gethostname()}" in msg and "another driver" in msg
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released by the winner


def test_stale_lock_of_a_dead_driver_is_taken_over_by_exactly_one(tmp_path: Path):
    run = tmp_path / "run"
    _write_lock(run, host=socket.gethostname(), pid=_dead_pid(), pid_started=0.0)
    out = _race(str(run))
    assert sum(r[0] == "won" for r in out) == 1, out


def test_live_holder_is_never_taken_over_and_release_is_by_owner_only(tmp_path: Path):
    run = str(tmp_path / "run")
    first = RunLock(run).acquire()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock(run).acquire()
    RunLock(run).release()  # a lock object that does not hold it removes nothing
    assert (tmp_path / "run" / LOCK_NAME).exists()
    first.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    with RunLock(run):  # free again
        pass


def test_reused_pid_and_other_host(tmp_path: Path):
    run = tmp_path / "run"
    # our own pid, but a different process start time: the pid was reused, the holder is gone
    _write_lock(run, host=socket.gethostname(), pid=os.getpid(), pid_started=1.0)
    RunLock(str(run)).acquire().release()
    # a holder on another host cannot be checked: refused, with the way out
    _write_lock(run, host="some-other-host", pid=1, pid_started=1.0)
    with pytest.raises(RunLockedError, match="cannot be checked from here.*delete"):
        RunLock(str(run)).acquire()
