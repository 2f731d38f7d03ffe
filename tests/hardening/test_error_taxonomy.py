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
