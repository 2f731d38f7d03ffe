"""Where another thread of this test process is now, so a "nothing happened yet" check can wait until the code
under test has really reached the point it must not pass, instead of sleeping and hoping it got there."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any


def locals_in(thread: threading.Thread, function: str, *, in_a_call: bool = False) -> dict[str, Any] | None:
    """A copy of the local variables of `function` if `thread` is running it now (its innermost call of it), else
    None. With `in_a_call`, only while that call is itself inside a Python function it called (waiting on it)."""
    top = sys._current_frames().get(thread.ident or -1)
    frame = top
    while frame is not None:
        if frame.f_code.co_name == function:
            return None if in_a_call and frame is top else dict(frame.f_locals)
        frame = frame.f_back
    return None


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Return once `condition()` holds; fail the test after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.01)
