"""Live progress bars (tqdm: count, rate, ETA) for release creation, export and verify.

On unless CIEP_PROGRESS_BARS=0; like tqdm, a bar only draws when stderr is a terminal (CIEP_PROGRESS_BARS=1
forces it on, e.g. under a pager)."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

ENV = "CIEP_PROGRESS_BARS"


def bars_enabled() -> bool | None:
    """True: always draw; False: never; None: draw when stderr is a terminal."""
    value = os.environ.get(ENV, "")
    if value == "0":
        return False
    if value == "1":
        return True
    return None


def progress(total: int | None, desc: str, unit: str) -> tqdm:
    """A bar with rate and ETA (`total` known) or rate only; `.update(n)` it, close it (or use `with`)."""
    enabled = bars_enabled()
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr, smoothing=0.1,
                disable=None if enabled is None else not enabled)
