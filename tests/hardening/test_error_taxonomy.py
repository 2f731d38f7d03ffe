"""Issue 11: which exceptions are transient (retried by a rerun) and which are permanent, with the real exception
classes of Ray, botocore and the OS."""

from __future__ import annotations

import errno

import pytest
import ray.exceptions as rex
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from core.faults import InjectedFault, InjectedTransientFault
from stages.base import RowRejected
from stages.errors import PERMANENT, TRANSIENT, classify


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EIO, "Input/output error"),
    OSError(errno.EDQUOT, "Disk quota exceeded"), MemoryError(), TimeoutError("read timed out"),
    ConnectionResetError(errno.ECONNRESET, "reset"), InjectedTransientFault("x"),
    rex.ActorDiedError(), rex.OutOfMemoryError("killed"), rex.NodeDiedError("node gone"),
    rex.WorkerCrashedError(), rex.ObjectLostError("0" * 56, "owner", ""),
    _client_error("SlowDown", 503), _client_error("RequestTimeout", 400), _client_error("InternalError", 500),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    RuntimeError("upload failed: [Errno 28] No space left on device"),
])
def test_transient(exc):
    assert classify(exc) == TRANSIENT


def _wrapped() -> Exception:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise ValueError("could not write the reference image") from inner
    except ValueError as outer:
        return outer


@pytest.mark.parametrize("exc", [
    InjectedFault("a model bug"), ValueError("bad landmarks"), KeyError("x"), RowRejected("no_face"),
    FileNotFoundError(errno.ENOENT, "missing"), PermissionError(errno.EACCES, "denied"),
    _client_error("AccessDenied", 403), _client_error("NoSuchBucket", 404),
])
def test_permanent(exc):
    assert classify(exc) == PERMANENT


def test_a_transient_cause_makes_the_wrapper_transient():
    assert classify(_wrapped()) == TRANSIENT


def test_the_abort_guard_stopping_on_dead_workers_is_exit_1_not_3():
    """A model that kills its worker on every item: the guard's StageFailureError is raised while the lost actor
    (transient) is being handled, so it carries that context; it is still a broken model (exit 1)."""
    from pipeline.commit import StageFailureError
    from pipeline.exits import EXIT_FAILED, exit_code_for

    try:
        try:
            raise rex.ActorDiedError()
        except rex.ActorDiedError:
            raise StageFailureError("8 of 8 items failed with stage_error or worker_crashed") from None
    except StageFailureError as exc:
        assert exc.__context__ is not None and classify(exc) == TRANSIENT
        assert exit_code_for(exc) == EXIT_FAILED
