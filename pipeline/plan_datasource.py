"""The round's plan files, and ingest's in-memory listing, as lazy Ray Data datasources: read tasks made from what
the driver knows, nothing run before execution.

`ray.data.from_arrow` of one small table per file (the first version) ran one metadata task per file before the
dataset existed: ~3,900 tasks for a 1M-candidate round, ~96 s on 2 cores before the first item could start. Here
the dataset is known from the file names alone (one row-less metadata entry per file); a read task waits for its
file (pipeline/plan_files.py), reads it and, with the features table, gathers the full plan rows. Ingest had the
same cost (`from_arrow` of its listing in blocks of a few rows: one task per block, ~125,000 at 1M images): its table
is put once in the object store and read by tasks that each slice a run of consecutive blocks out of it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import pyarrow as pa
import ray
import ray.exceptions
from ray.data.block import BlockMetadata
from ray.data.context import DataContext
from ray.data.datasource import Datasource, ReadTask

from core.location import Location
from pipeline.plan_files import read_plan_file
from stages.pairing import gather_plan

log = logging.getLogger(__name__)

# The features table of pipeline/plan_features.py: one object-store table, or parts whose columns together form it.
Features = ray.ObjectRef | list[ray.ObjectRef]


def features_table(features: Features) -> pa.Table:
    """The features table from its object-store parts (zero-copy `ray.get` on a node, columns side by side)."""
    parts = ray.get(features if isinstance(features, list) else [features])
    table = parts[0]
    for part in parts[1:]:
        for field, column in zip(part.schema, part.columns, strict=True):
            table = table.append_column(field, column)
    return table


@ray.remote(num_cpus=0, max_restarts=0)
class _Reads:
    """The furthest plan file a read task has asked for (-1: none yet)."""

    def __init__(self) -> None:
        self.furthest = -1
        self.moved = asyncio.Event()

    async def reading(self, index: int) -> None:
        if index > self.furthest:
            self.furthest = index
            self.moved.set()
            self.moved = asyncio.Event()

    async def furthest_from(self, index: int, timeout_s: float) -> int:
        """The furthest file asked for, once it is `index` or later, or when `timeout_s` has passed."""
        try:
            while self.furthest < index:
                await asyncio.wait_for(self.moved.wait(), timeout_s)
        except TimeoutError:
            pass
        return self.furthest


@dataclass(frozen=True)
class PlanReads:
    """What a read task holds to say which plan file it asks for (a small handle, pickled into the tasks)."""

    actor: ray.actor.ActorHandle

    def reading(self, index: int) -> None:
        self.actor.reading.remote(index)  # nothing to wait for


class ReadAhead:
    """How far the planner may write ahead of the plan files' readers: file k once a read task has asked for file
    k - `ahead` or a later one, or at once after `release` (the stream has ended or failed). A started read thus
    always gets its file, whatever order Ray Data reads in, and the planner thread, which holds the GIL while it
    plans, leaves the driver to Ray Data's executor once it is `ahead` files in front."""

    def __init__(self, n_files: int, ahead: int) -> None:
        self.ahead, self.furthest = ahead, -1
        self.released = threading.Event()
        # a round of `ahead` files or fewer is written at once, without starting the actor
        self.reads = PlanReads(_Reads.remote()) if n_files > ahead else None  # type: ignore[attr-defined]

    def wait_to_write(self, index: int) -> None:
        """Return once file `index` may be written."""
        while self.reads is not None and index - self.ahead > self.furthest and not self.released.is_set():
            try:
                self.furthest = cast(int, ray.get(self.reads.actor.furthest_from.remote(index - self.ahead, 1.0)))
            except ray.exceptions.RayError as exc:  # the actor went with its node: write the rest at once
                log.warning("plan write-ahead: no read progress (%s); writing the remaining files", exc)
                self.released.set()

    def paced(self, chunks: Iterator[pa.Table]) -> Iterator[pa.Table]:
        """The chunks of files 0, 1, ...: chunk k is made (planned) once file k may be written."""
        for index in itertools.count():
            self.wait_to_write(index)
            chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk

    def release(self) -> None:
        """Let the planner write the remaining files at once."""
        self.released.set()


def read_plan_rows(url: str, run: Location, failure: str, features: Features | None) -> pa.Table:
    """One plan file's rows: PLAN_SCHEMA rows gathered from `features` when given, else the file as written."""
    plan = read_plan_file(url, run, failure)
    return plan if features is None else gather_plan(plan, features_table(features))


def lazy_read_task(read: Callable[[], Iterable[pa.Table]], num_rows: int | None = None,
                   schema: pa.Schema | None = None) -> ReadTask:
    """A read task known to Ray Data by what is given here: nothing is read, and no task runs, before execution."""
    return ReadTask(read, BlockMetadata(num_rows=num_rows, size_bytes=None, exec_stats=None, input_files=None),
                    schema=schema)


class LazyDatasource(Datasource):
    """A datasource that Ray Data does not sample or size before execution."""

    def estimate_inmemory_data_size(self) -> int | None:
        return None


class PlanFilesDatasource(LazyDatasource):
    """One block per plan file, in file order."""

    def __init__(self, urls: list[str], failure: str, run: Location, features: Features | None,
                 reads: PlanReads | None = None) -> None:
        self.urls, self.failure, self.run, self.features, self.reads = urls, failure, run, features, reads

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: DataContext | None = None) -> list[ReadTask]:
        return [self._task(index, url) for index, url in enumerate(self.urls)]

    def _task(self, index: int, url: str) -> ReadTask:
        run, failure, features, reads = self.run, self.failure, self.features, self.reads

        def read() -> Iterable[pa.Table]:
            if reads is not None:  # the planner writes ahead of the furthest file asked for (ReadAhead)
                reads.reading(index)
            return [read_plan_rows(url, run, failure, features)]

        return lazy_read_task(read)


class TableDatasource(LazyDatasource):
    """An in-memory table, put once in the object store, as blocks of `rows_per_block` rows in table order; a read
    task slices a run of consecutive blocks out of it (`parallelism` tasks at most, in table order; Ray Data joins
    the blocks of one task into one)."""

    def __init__(self, table: pa.Table, rows_per_block: int) -> None:
        self.table = ray.put(table)
        self.schema, self.num_rows, self.rows_per_block = table.schema, table.num_rows, max(1, rows_per_block)

    def num_blocks(self) -> int:
        """The blocks the dataset yields (one empty block for an empty table)."""
        return max(1, -(-self.num_rows // self.rows_per_block))

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: DataContext | None = None) -> list[ReadTask]:
        blocks = self.num_blocks()
        rows = -(-blocks // max(1, min(parallelism, blocks))) * self.rows_per_block  # whole blocks per task
        return [self._task(start, min(start + rows, self.num_rows)) for start in range(0, max(1, self.num_rows), rows)]

    def _task(self, start: int, stop: int) -> ReadTask:
        table, step = self.table, self.rows_per_block

        def read() -> Iterable[pa.Table]:
            whole = ray.get(table)  # zero-copy on the node: each block is copied once, when Ray Data stores it
            return [whole.slice(i, min(step, stop - i)) for i in range(start, stop, step)] or [whole.slice(0, 0)]

        return lazy_read_task(read, stop - start, self.schema)
