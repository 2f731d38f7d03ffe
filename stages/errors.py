"""Error taxonomy: which failures are transient (retry the item on a rerun) and which are permanent (a decision).

Permanent: bad input and QC decisions (RowRejected reasons), and any exception we cannot tell to be
transient (a model bug stays a `stage_error` reject). Transient: failures of the environment that a rerun can
fix: a full or failing disk (ENOSPC, EIO, EDQUOT, ...), storage throttling and timeouts (S3 SlowDown, 503,
connection resets), a lost Ray actor or node, an OOM kill, MemoryError. No Ray or pipeline import: stages use it.
"""

from __future__ import annotations

import errno

# OSError errnos that a rerun (after space is freed, the device recovers, the network returns) can fix.
TRANSIENT_ERRNOS = frozenset(e for e in (
    errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT,
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE, errno.ENETDOWN, errno.ENETUNREACH,
    errno.EHOSTUNREACH, errno.ENOMEM, getattr(errno, "ESTALE", None), getattr(errno, "EREMOTEIO", None),
) if e is not None)

# Exception class names (matched anywhere in the MRO) from libraries we do not import here: Ray's lost
# actor / node / OOM kill / object loss, botocore's and aiohttp's network and throttling errors.
TRANSIENT_CLASS_NAMES = frozenset({
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError", "NodeDiedError",
    "WorkerCrashedError", "OutOfMemoryError", "ObjectLostError", "OwnerDiedError", "ObjectFetchTimedOutError",
    "RaySystemError", "GetTimeoutError", "LocalRayletDiedError", "TaskUnschedulableError",
    "ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError", "ConnectionClosedError",
    "ServerDisconnectedError", "ClientConnectorError", "ClientOSError", "ClientPayloadError",
    "InjectedTransientFault",
})

# Markers in an error text (S3 and other HTTP stores: throttling, server-side errors, timeouts).
TRANSIENT_TEXT = ("SlowDown", "Throttl", "RequestLimitExceeded", "TooManyRequests", "RequestTimeout",
                  "ServiceUnavailable", "InternalError", "503", "500 Internal", "Please reduce your request rate",
                  "No space left on device", "Input/output error", "Connection reset", "timed out")

TRANSIENT = "transient"
PERMANENT = "permanent"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes / contexts (a wrapped OSError counts as the OSError)."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def is_transient(exc: BaseException) -> bool:
    """True when a rerun may succeed where this exception failed."""
    for e in _chain(exc):
        if isinstance(e, (MemoryError, TimeoutError, ConnectionError)):
            return True
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
        if any(cls.__name__ in TRANSIENT_CLASS_NAMES for cls in type(e).__mro__):
            return True
        if type(e).__name__ in ("ClientError", "ResponseError") or "botocore" in type(e).__module__:
            text = str(e)
            if any(t in text for t in TRANSIENT_TEXT):
                return True
    # a non-OSError wrapping text of a transient OS failure (e.g. an fsspec or Ray error re-raised as a string)
    text = f"{type(exc).__name__}: {exc}"
    return any(t in text for t in ("No space left on device", "SlowDown", "Please reduce your request rate",
                                   "OutOfMemoryError", "ActorDiedError", "NodeDiedError"))


def classify(exc: BaseException) -> str:
    """TRANSIENT or PERMANENT."""
    return TRANSIENT if is_transient(exc) else PERMANENT
