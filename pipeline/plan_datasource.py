"""The round's plan files as a Ray Data datasource: one read task per file, made lazily.

`ray.data.from_arrow` of one small table per file (the first version) ran one metadata task per file before the
dataset existed: ~3,900 tasks for a 1M-candidate round, ~96 s on 2 cores before the first item could start. Here
the dataset is known from the file names alone (one row-less metadata entry per file); a read task waits for its
file (pipeline/plan_files.py), reads it and, with the features table, gathers the full plan rows.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.context import DataContext
from ray.data.datasource import Datasource, ReadTask

from core.location import Location
from pipeline.plan_files import read_plan_file
from stages.pairing import gather_plan

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


def read_plan_rows(url: str, run: Location, failure: str, features: Features | None) -> pa.Table:
    """One plan file's rows: PLAN_SCHEMA rows gathered from `features` when given, else the file as written."""
    plan = read_plan_file(url, run, failure)
    return plan if features is None else gather_plan(plan, features_table(features))


class PlanFilesDatasource(Datasource):
    """One block per plan file, in file order."""

    def __init__(self, urls: list[str], failure: str, run: Location, features: Features | None) -> None:
        self.urls, self.failure, self.run, self.features = urls, failure, run, features

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: DataContext | None = None) -> list[ReadTask]:
        return [self._task(url) for url in self.urls]

    def _task(self, url: str) -> ReadTask:
        run, failure, features = self.run, self.failure, self.features

        def read() -> Iterable[pa.Table]:
            return [read_plan_rows(url, run, failure, features)]

        return ReadTask(read, BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None))
