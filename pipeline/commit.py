"""Collect stage output on the driver and commit it to the manifest store in atomic, resumable shards."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from core.faults import kill_after_commit
from manifests.store import ManifestStore, shard_key

log = logging.getLogger(__name__)

TableSplitter = Callable[[pa.Table], dict[str, pa.Table]]


class StageFailureError(RuntimeError):
    """A model failed on so many items that going on would reject the whole corpus."""


@dataclass
class Progress:
    """Counts for one phase, logged as the phase streams."""

    phase: str
    total: int
    done: int = 0
    outcomes: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    last_log: float = 0.0

    def update(self, outcomes: list[str]) -> None:
        self.done += len(outcomes)
        self.outcomes.update(outcomes)
        now = time.monotonic()
        if now - self.last_log >= 5 or self.done >= self.total:
            self.last_log = now
            rate = self.done / max(now - self.started, 1e-9)
            top = ", ".join(f"{k}={v}" for k, v in self.outcomes.most_common(5))
            log.info("[%s] %d/%d  %.2f items/s  (%s)", self.phase, self.done, self.total, rate, top)


@dataclass
class StageErrorGuard:
    """Stops the job when stage errors pass the configured share of processed items."""

    max_rate: float
    min_items: int
    processed: int = 0
    errors: int = 0
    first_error: str = ""

    def check(self, reasons: list[str], details: list[str | None]) -> None:
        self.processed += len(reasons)
        for reason, detail in zip(reasons, details, strict=False):
            if reason == "stage_error":
                self.errors += 1
                self.first_error = self.first_error or (detail or "")
        if self.processed >= self.min_items and self.errors / self.processed > self.max_rate:
            raise StageFailureError(
                f"{self.errors} of {self.processed} items failed with stage_error (limit "
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
            shard = shard_key(part.column(self.id_column).to_pylist(), self.prefix)
            self.store.commit(shard, self.split(part), self.info)
            self.committed_rows += part.num_rows
            kill_after_commit(self.prefix)  # testing hook, inert unless its variable is set

