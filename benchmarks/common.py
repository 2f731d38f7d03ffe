"""What the benchmarks share: repository paths, the machine description, timing windows, sampling the peak RSS,
the rank AUC, and writing a section of RESULTS.md."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
DEMO_CORPUS = REPO / "data" / "demo_corpus"
LONDON = REPO / "data" / "faces" / "london"  # DeBruine & Jones 2017, CC BY 4.0 (credit in its README)


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def load_average(sep: str = " / ") -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    return sep.join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine() -> str:
    """One line: architecture, CPU, cores, memory and Python."""
    return (f"{platform.machine()}, {cpu_name()}, {cores()} CPU cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}")


def timing_windows(fn: Callable[[], int], seconds: float, repeats: int = 3) -> list[tuple[int, float, float]]:
    """After one warm-up call, `repeats` windows of about `seconds` each, calling `fn` (which returns how many units
    it did) again and again: (units, wall seconds, process CPU seconds) per window. On a shared machine the best
    window is the least disturbed one, and CPU time does not count waiting for a core."""
    fn()
    windows = []
    for _ in range(repeats):
        done, start, start_cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            done += fn()
        windows.append((done, time.perf_counter() - start, time.process_time() - start_cpu))
    return windows


def best_rate(fn: Callable[[], int], seconds: float, repeats: int = 3) -> float:
    """Units per wall second in the best of `repeats` timing windows."""
    return max(done / wall for done, wall, _ in timing_windows(fn, seconds, repeats))


class PeakRSS:
    """This process's RSS, sampled every `interval` seconds by a thread between `start()` and `stop()` (or as a
    context manager): `peak` since the start or the last `reset()`, and every sample in `samples`."""

    def __init__(self, interval: float = 0.02) -> None:
        self.proc = psutil.Process()
        self.interval = interval
        self.samples: list[int] = []
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = self.proc.memory_info().rss
        self.samples.append(rss)
        self.peak = max(self.peak, rss)

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> PeakRSS:
        self._thread.start()
        return self

    def reset(self) -> int:
        """Start a new peak from the current RSS (returned)."""
        rss = self.proc.memory_info().rss
        self.peak = rss
        return rss

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.samples

    def __enter__(self) -> PeakRSS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC: P(pos > neg) + P(pos == neg) / 2 over all pairs (from ranks, ties averaged)."""
    p, n = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    values = np.concatenate([p, n])
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ranks = (first + (counts + 1) / 2.0)[inverse]  # 1-based average ranks
    return float((ranks[: p.size].sum() - p.size * (p.size + 1) / 2.0) / (p.size * n.size))


def labelled_sets_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments every labelled-set benchmark takes: --london, --corpus (repeatable), --write-results."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--london", type=Path, default=LONDON)
    ap.add_argument("--corpus", type=Path, action="append", default=[], help="a labelled folder (repeatable)")
    ap.add_argument("--write-results", action="store_true", help=f"replace the section in {RESULTS}")
    return ap


def replace_section(path: Path, heading: str, text: str) -> None:
    """Replace the section of the markdown file that starts with `heading` (or append it); `text` includes the
    heading line. The other sections are left as they are."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if heading in old:
        head, rest = old.split(heading, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        old = head.rstrip() + "\n\n" + tail
    path.write_text(old.rstrip() + "\n\n" + text)


def print_section(text: str, heading: str, append: str | None) -> None:
    """Print a benchmark's markdown section and, when `append` names a file, replace that section there."""
    sys.stdout.write(text)
    if append:
        replace_section(Path(append), heading, text)


def append_to_section(path: Path, text: str, heading: str) -> None:
    """Add `text` at the end of the markdown file's `heading` section (created at the end when absent)."""
    doc = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = doc.rstrip("\n").split("\n")
    if heading not in lines:
        lines += ["", heading]
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    lines[end:end] = ["", *text.rstrip("\n").split("\n")]
    path.write_text("\n".join(lines) + "\n")
