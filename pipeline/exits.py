"""Exit statuses of `ciep` and `run_idi`, and the one-line message for an error (README "Exit statuses")."""

from __future__ import annotations

import errno
import logging
import os

from stages.errors import is_transient

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # the run was refused or stopped: run locked, config conflict, a broken model, an internal error
EXIT_USAGE = 2  # bad arguments or config (YAML file or --set override), unknown named query, bad SQL
EXIT_TRANSIENT = 3  # transient errors (full disk, storage throttling, lost node, OOM) left items to retry: rerun
EXIT_LOCATION = 4  # corpus root / index missing or unreadable, output root a file or not writable
EXIT_NOT_FOUND = 5  # no such run or release
EXIT_DAMAGED = 6  # committed data is damaged (`ciep fsck` found problems, or a read met a bad file): ciep fsck --repair
EXIT_UNCHECKED = 7  # `ciep fsck` could not check (storage unreachable, the run locked by a live driver)

TRACEBACK_ENV = "CIEP_TRACEBACK"  # set to 1 to get the full traceback of an unexpected error


class LocationError(RuntimeError):
    """An input or output location cannot be used (EXIT_LOCATION)."""


class UsageError(ValueError):
    """A command-line argument is wrong (EXIT_USAGE)."""


def one_line(exc: BaseException) -> str:
    """`Type: message` on a single line (newlines of the message folded)."""
    text = " ".join(str(exc).split()) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def exit_code_for(exc: BaseException) -> int:
    """The exit status an uncaught error of a run or command maps to."""
    from core.config import ConfigError
    from manifests.integrity import DamagedManifestError
    from pipeline.commit import StageFailureError

    if isinstance(exc, (ConfigError, UsageError)):
        return EXIT_USAGE
    if isinstance(exc, DamagedManifestError):
        return EXIT_DAMAGED
    if isinstance(exc, StageFailureError):  # a broken model, even one whose crashes (transient) it counted
        return EXIT_FAILED
    if isinstance(exc, LocationError):
        return EXIT_LOCATION
    if isinstance(exc, FileNotFoundError) and exc.errno is None:  # our own lookups (run / release): no errno
        return EXIT_NOT_FOUND
    if is_transient(exc):
        return EXIT_TRANSIENT
    if isinstance(exc, (PermissionError, IsADirectoryError, NotADirectoryError)) or \
            (isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES)):
        return EXIT_LOCATION
    return EXIT_FAILED


def report(prog: str, exc: BaseException) -> int:
    """Print the one-line error for `exc` to stderr and return its exit status; the traceback goes to the log
    at DEBUG (and is re-raised when CIEP_TRACEBACK=1)."""
    import sys

    if os.environ.get(TRACEBACK_ENV) == "1":
        raise exc
    code = exit_code_for(exc)
    hint = ""
    if code == EXIT_TRANSIENT:
        hint = " (transient: what is done is kept; fix the cause, e.g. free space, and rerun)"
    log.debug("%s failed", prog, exc_info=exc)
    print(f"{prog}: {one_line(exc)}{hint}", file=sys.stderr)
    return code
