"""Ray Data datasources known from what the driver holds, nothing run before execution: the base class, the lazy
read task, and ingest's in-memory listing (TableDatasource). The round's plan files are one too
(planning/datasource.py).

Ingest's listing as `ray.data.from_arrow` in blocks of a few rows (the first version) ran one metadata task per
block before the dataset existed, ~125,000 at 1M images: here the table is put once in the object store and read by
tasks that each slice a run of consecutive blocks out of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.context import DataContext
from ray.data.datasource import Datasource, ReadTask


def lazy_read_task(read: Callable[[], Iterable[pa.Table]], num_rows: int | None = None,
                   schema: pa.Schema | None = None) -> ReadTask:
    """A read task known to Ray Data by what is given here: nothing is read, and no task runs, before execution."""
    return ReadTask(read, BlockMetadata(num_rows=num_rows, size_bytes=None, exec_stats=None, input_files=None),
                    schema=schema)


class LazyDatasource(Datasource):
    """A datasource that Ray Data does not sample or size before execution."""

    def estimate_inmemory_data_size(self) -> int | None:
        return None


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
