"""Real small file systems (tmpfs) for the tests of what a run does on a full or read-only disk.

Two ways to get one:
- `mount_here`: mounted for every process of the machine (the in-process runs: their Ray workers must see it).
  Needs root.
- `in_private_tmpfs`: a command that runs another one with a tmpfs in a mount namespace of its own (`unshare
  --mount`, or `unshare --map-root-user --mount` as a user where the kernel allows user namespaces). The mount
  exists for that process alone and goes away with it, so nothing is left mounted if the test dies.
The test asks `tests.prerequisites.require` for the way it needs: skipped where neither works, failed under CI.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path

UNSHARE_WAYS = (["unshare", "--mount"], ["unshare", "--map-root-user", "--mount"])
# mount a tmpfs at $2 with options $1; fill it to the last block if $3 is "fill"; then run the rest of the arguments
_MOUNT_THEN_RUN = ('mount -t tmpfs -o "$1" tmpfs "$2" || exit 97; '
                   'if [ "$3" = fill ]; then cat /dev/zero > "$2/filler" 2>/dev/null; fi; shift 3; exec "$@"')


def can_mount_here() -> bool:
    """True if this process may mount a tmpfs for everybody (root)."""
    with tempfile.TemporaryDirectory(prefix="ciep-mount-probe-") as probe:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe],
                          capture_output=True).returncode != 0:
            return False
        subprocess.run(["umount", probe], check=True)
    return True


def mount_here(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


@functools.cache
def _unshare() -> tuple[str, ...] | None:
    """The first `unshare` invocation that can mount a tmpfs here, or None."""
    with tempfile.TemporaryDirectory(prefix="ciep-unshare-probe-") as probe:
        for way in UNSHARE_WAYS:
            try:
                done = subprocess.run([*way, "sh", "-c", _MOUNT_THEN_RUN, "sh", "size=64k", probe, "-", "true"],
                                      capture_output=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode == 0:
                return tuple(way)
    return None


def private_tmpfs_works() -> bool:
    return _unshare() is not None


def in_private_tmpfs(mountpoint: Path, options: str, command: list[str], *, fill: bool = False) -> list[str]:
    """`command` run with a fresh tmpfs (mount `options`) at `mountpoint`, filled to the last block if `fill`, in a
    mount namespace of its own. Call `private_tmpfs_works()` first."""
    way = _unshare()
    assert way is not None, "no way to mount a private tmpfs here (check private_tmpfs_works() first)"
    os.makedirs(mountpoint, exist_ok=True)
    return [*way, "sh", "-c", _MOUNT_THEN_RUN, "sh", options, str(mountpoint), "fill" if fill else "-", *command]
