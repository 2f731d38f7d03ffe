"""An exclusive lock on a run folder: one driver writes a run id at a time.

The lock is `<run>/_lock.json`, holding who took it (host, pid, process start time, a random token). It is
created atomically and only if absent:

- local folders: the holder record is written to a temp file and hard-linked to the lock name (`os.link`
  fails if the name exists), so the lock never exists half-written;
- object stores: a conditional PUT (`If-None-Match: *`, s3fs `pipe_file(mode="create")`), which AWS S3 and
  moto honour. Other fsspec filesystems fall back to check-then-write, which is not atomic (logged).

A lock whose holder is on this host and whose process is gone (SIGKILL, OOM, power loss of a container) is
stale and taken over, so a killed run can be resumed by rerunning it. Takeover is itself atomic: locally under
an flock on `<run>/_lock.json.takeover` with a re-read, on S3 a PUT conditional on the stale lock's ETag. A lock
held from another host cannot be checked from here: the error says so, and deleting the file (after making sure
that driver is gone) releases it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field

import fsspec
import psutil
from fsspec.implementations.local import LocalFileSystem

from core.location import Location

log = logging.getLogger(__name__)

LOCK_NAME = "_lock.json"


class RunLockedError(RuntimeError):
    """Another live driver holds the run folder."""


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def holder_alive(holder: dict) -> bool | None:
    """True/False for a holder on this host; None when it is on another host (cannot tell)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    recorded = holder.get("pid_started")
    # A different start time means the pid was reused by an unrelated process.
    return recorded is None or abs(started - float(recorded)) < 1.0


@dataclass
class RunLock:
    """`with RunLock(run_location):` holds the run folder for the block (a plain path or URL: no options)."""

    run_url: Location | str
    fs: fsspec.AbstractFileSystem = field(init=False, repr=False)
    path: str = field(init=False)
    token: str = field(init=False, default="")

    def __post_init__(self) -> None:
        run = Location.of(self.run_url)
        self.fs, self.path = run.fs, run.sub_path(LOCK_NAME)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def _record(self) -> bytes:
        self.token = secrets.token_hex(16)
        pid = os.getpid()
        return json.dumps(dict(host=socket.gethostname(), pid=pid, pid_started=_process_start(pid),
                               token=self.token, acquired_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               command=" ".join(sys.argv)[:500]), sort_keys=True).encode()

    # -- primitives per filesystem -------------------------------------------------------------------
    def _create(self, data: bytes) -> bool:
        """Create the lock if absent; False if it exists."""
        if self.local:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.tmp-{secrets.token_hex(6)}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:
            self.fs.pipe_file(self.path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except (TypeError, NotImplementedError):  # a filesystem without exclusive create
            log.warning("%s cannot create files exclusively; the run lock is best effort", type(self.fs).__name__)
            if self.fs.exists(self.path):
                return False
            self.fs.pipe_file(self.path, data)
            return True

    def _read(self) -> tuple[bytes, str | None] | None:
        """(content, version) of the lock, None if absent. version: the ETag on object stores."""
        try:
            if self.local:
                with open(self.path, "rb") as fh:
                    return fh.read(), None
            etag = self.fs.info(self.path).get("ETag")
            self.fs.invalidate_cache(self.path)
            return self.fs.cat_file(self.path), etag
        except FileNotFoundError:
            return None

    def _replace_if_unchanged(self, old: bytes, etag: str | None, data: bytes) -> bool:
        """Replace the lock with `data` only if it still holds `old`."""
        if self.local:
            import fcntl
            with open(f"{self.path}.takeover", "a+b") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                try:
                    current = self._read()
                    if current is None or current[0] != old:
                        return False
                    tmp = f"{self.path}.tmp-{secrets.token_hex(6)}"
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, self.path)
                    return True
                finally:
                    fcntl.flock(guard, fcntl.LOCK_UN)
        if not etag:
            return False
        try:
            self.fs.pipe_file(self.path, data, IfMatch=etag)
            return True
        except (FileExistsError, FileNotFoundError, OSError) as err:
            log.info("lock takeover lost a race: %s", err)
            return False

    # -- public ----------------------------------------------------------------------------------------
    def acquire(self, attempts: int = 20) -> RunLock:
        for _ in range(attempts):
            data = self._record()
            if self._create(data):
                return self
            current = self._read()
            if current is None:
                continue  # released in between: try again
            content, etag = current
            try:
                holder = json.loads(content)
            except json.JSONDecodeError:
                holder = {}
            alive = holder_alive(holder)
            if alive is False:
                if self._replace_if_unchanged(content, etag, data):
                    log.warning("took over the lock of run %s from pid %s on %s, which is no longer running",
                                self.run_url, holder.get("pid"), holder.get("host"))
                    return self
                continue
            where = f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('acquired_at')}"
            hint = ("" if alive else "; that host cannot be checked from here: if that driver is gone, delete "
                    f"{self.fs.unstrip_protocol(self.path) if not self.local else self.path}")
            raise RunLockedError(f"run {self.run_url} is being written by another driver ({where}){hint}; "
                                 "wait for it to finish or choose another run.run_id")
        raise RunLockedError(f"could not take the lock of run {self.run_url} (it kept changing)")

    def release(self) -> None:
        current = self._read()
        if current is None or not self.token:
            return
        try:
            mine = json.loads(current[0]).get("token") == self.token
        except json.JSONDecodeError:
            mine = False
        if mine:
            self.fs.rm_file(self.path)
        self.token = ""

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
