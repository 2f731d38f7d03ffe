"""The round's plan files as a lazy Ray Data datasource (read tasks made from the file names alone), and
ReadAhead, which keeps the planner a few files ahead of the reads.

`ray.data.from_arrow` of one small table per file (the first version) ran one metadata task per file before the
dataset existed: ~3,900 tasks for a 1M-candidate round, ~96 s on 2 cores before the first item could start. Here
the dataset is known from the file names alone (one row-less metadata entry per read task); a read task waits for
its files (files.py), reads them and, with the features table, gathers the full plan rows (gather.read_plan_rows).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import pyarrow as pa
import ray
import ray.exceptions
from ray.data.context import DataContext
from ray.data.datasource import ReadTask

from core.location import Location
from pipeline.lazy_datasource import LazyDatasource, lazy_read_task
from pipeline.planning.gather import read_plan_rows
from pipeline.planning.ray_features import Features

log = logging.getLogger(__name__)


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


# Plan files per read task: the first PLAN_SINGLE_FILE_READS files one task each (the first items wait for no later
# file), the rest in runs of consecutive files, so that there are about PLAN_READ_TASKS tasks at most: Ray Data stores
# every read task before the first one runs (~2 ms each here: 26 s for the 11,719 files of a 3M-source round).
PLAN_SINGLE_FILE_READS = 16
PLAN_READ_TASKS = 1024


def plan_file_runs(n_files: int) -> list[tuple[int, int]]:
    """The [start, stop) file ranges of the read tasks, in file order: single files first, then equal runs."""
    single = min(n_files, PLAN_SINGLE_FILE_READS)
    runs = [(k, k + 1) for k in range(single)]
    rest = n_files - single
    step = max(1, -(-rest // max(1, PLAN_READ_TASKS - single)))
    return runs + [(k, min(k + step, n_files)) for k in range(single, n_files, step)]


class PlanFilesDatasource(LazyDatasource):
    """The plan files in file order, one block per read task: a file, or a run of consecutive files read and
    gathered at once (plan_file_runs)."""

    def __init__(self, urls: list[str], failure: str, run: Location, features: Features | None,
                 reads: PlanReads | None = None) -> None:
        self.urls, self.failure, self.run, self.features, self.reads = urls, failure, run, features, reads

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: DataContext | None = None) -> list[ReadTask]:
        return [self._task(start, self.urls[start:stop]) for start, stop in plan_file_runs(len(self.urls))]

    def _task(self, start: int, urls: list[str]) -> ReadTask:
        run, failure, features, reads = self.run, self.failure, self.features, self.reads

        def read() -> Iterable[pa.Table]:
            if reads is not None:  # the planner writes ahead of the furthest file asked for (ReadAhead)
                reads.reading(start + len(urls) - 1)
            return [read_plan_rows(urls, run, failure, features)]  # the run's rows gathered at once

        return lazy_read_task(read)
