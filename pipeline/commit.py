"""Collect stage output on the driver and commit it to the manifest store in atomic, resumable shards."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from manifests.store import ManifestStore, shard_key
from pipeline.retry import batch_shard_ids

log = logging.getLogger(__name__)

TableSplitter = Callable[[pa.Table], dict[str, pa.Table]]


class StageFailureError(RuntimeError):
    """A model failed on so many items that going on would reject the whole corpus."""


PROGRESS_BARS_ENV = "CIEP_PROGRESS_BARS"  # "1": one live bar per phase; "0": log lines only; unset: bars on a TTY


def progress_bars_enabled() -> bool:
    value = os.environ.get(PROGRESS_BARS_ENV)
    if value is None:
        return sys.stderr.isatty()
    return value not in ("", "0", "false")


@dataclass
class Progress:
    """Counts for one phase: a live bar (rate, ETA) when progress bars are on, a log line every 5 s either way."""

    phase: str
    total: int
    done: int = 0
    outcomes: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    last_log: float = 0.0
    bar: object = None

    def __post_init__(self) -> None:
        if progress_bars_enabled():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, desc=self.phase, unit="item", dynamic_ncols=True, smoothing=0.1)

    def update(self, outcomes: list[str]) -> None:
        self.update_counts(len(outcomes), Counter(outcomes))

    def update_counts(self, n: int, outcomes: Counter) -> None:
        self.done += n
        self.outcomes.update(outcomes)
        top = ", ".join(f"{k}={v}" for k, v in self.outcomes.most_common(5))
        if self.bar is not None:
            self.bar.update(n)  # type: ignore[attr-defined]
            self.bar.set_postfix_str(top, refresh=False)  # type: ignore[attr-defined]
        now = time.monotonic()
        if now - self.last_log >= 5 or self.done >= self.total:
            self.last_log = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("[%s] %d/%d  %.2f items/s  ETA %s  (%s)", self.phase, self.done, self.total, rate,
                     _duration(eta), top)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()  # type: ignore[attr-defined]
            self.bar = None


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class StageErrorGuard:
    """Stops the job when stage errors pass the configured share of processed items."""

    max_rate: float
    min_items: int
    processed: int = 0
    errors: int = 0
    first_error: str = ""

    def check(self, reasons: list[str], details: list[str | None]) -> None:
        errors = [d or "" for r, d in zip(reasons, details, strict=True) if r == "stage_error"]
        self.check_counts(len(reasons), len(errors), errors[0] if errors else None)

    def check_counts(self, processed: int, errors: int, first_error: str | None) -> None:
        """Add one batch's counts (from the commit stage's stats row) and raise if the rate is passed."""
        self.processed += processed
        self.errors += errors
        self.first_error = self.first_error or (first_error or "")
        if self.processed >= self.min_items and self.errors / self.processed > self.max_rate:
            raise StageFailureError(
                f"{self.errors} of {self.processed} items failed with stage_error or worker_crashed (limit "
                f"run.max_stage_error_rate={self.max_rate}); the model is likely broken. First error:\n"
                f"{self.first_error}")


class CommitBuffer:
    """Accumulate output batches; commit a shard every `rows` rows or `seconds` seconds."""

    def __init__(self, store: ManifestStore, split: TableSplitter, id_column: str, prefix: str,
                 rows: int = 256, seconds: float = 30.0, info: dict | None = None) -> None:
        self.store, self.split, self.id_column, self.prefix = store, split, id_column, prefix
        self.rows, self.seconds, self.info = rows, seconds, info or {}
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.last_flush = time.monotonic()
        self.committed_rows = 0

    def add(self, batch: pa.Table) -> None:
        if batch.num_rows:
            self.pending.append(batch)
            self.pending_rows += batch.num_rows
        if self.pending_rows >= self.rows or (self.pending and time.monotonic() - self.last_flush >= self.seconds):
            self.flush()

    def hold(self, batch: pa.Table) -> None:
        """Keep rows pending without committing anything now."""
        if batch.num_rows:
            self.pending.append(batch)
            self.pending_rows += batch.num_rows

    def flush(self, keep: Callable[[pa.Table], pa.Table] | None = None) -> None:
        """Commit pending rows; `keep` may filter them first (used when aborting)."""
        if not self.pending:
            return
        table = pa.concat_tables(self.pending, promote_options="default")
        self.pending, self.pending_rows = [], 0
        self.last_flush = time.monotonic()
        if keep is not None:
            table = keep(table)
        for start in range(0, table.num_rows, self.rows):  # shards never exceed `rows` rows
            part = table.slice(start, self.rows)
            shard = shard_key(batch_shard_ids(part, self.id_column), self.prefix)
            self.store.commit(shard, self.split(part), self.info)
            self.committed_rows += part.num_rows

