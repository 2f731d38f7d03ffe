"""The round plan as Parquet under the run folder (plan/round-<r>/part-<k>.parquet), read back by Ray Data.

The driver writes the plan in chunks of a few hundred rows as it makes them (stream.plan_round_stream), leaving out
candidates already decided, and never hands Ray Data an in-memory list. A file holds PLAN_INDEX_SCHEMA rows
(+ attempt): each image by its source row, gathered into full plan rows by the read task (gather.read_plan_rows,
from the features table of ray_features.py). Files are rewritten on every invocation (the plan is deterministic), so
a resumed run reads exactly its remaining work.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from core.location import Location
from manifests.store import atomic_write_bytes
from pipeline.done import not_done

log = logging.getLogger(__name__)


def plan_folder(run: Location, round_index: int) -> Location:
    return run.join("plan", f"round-{round_index}")


def _file(url: str, run: Location) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of a plan-file URL, reached with the run folder's options."""
    where = run.at(url)
    return where.fs, where.path


def plan_file_urls(run: Location, round_index: int, n_files: int) -> list[str]:
    """Remove the folder's old files and name the `n_files` files this invocation writes (in this order)."""
    folder = plan_folder(run, round_index)
    if folder.exists():
        folder.fs.rm(folder.path, recursive=True)
    return [folder.full_url(folder.sub_path(f"part-{k:06d}.parquet")) for k in range(n_files)]


def failure_url(run: Location, round_index: int) -> str:
    """Written when planning fails, so that readers waiting for a plan file stop."""
    folder = plan_folder(run, round_index)
    return folder.full_url(folder.sub_path("_FAILED"))


def _write(table: pa.Table, url: str, run: Location) -> None:
    fs, path = _file(url, run)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(fs, path, buf.getvalue())


def write_plan_files(chunks: Iterable[pa.Table], done: pa.Array, urls: list[str], run: Location,
                     empty: pa.Table | None = None) -> tuple[int, int]:
    """Write chunk k's not-yet-done rows to urls[k] (an empty file when none); returns (planned, to-do) rows.
    With `empty`, the urls past the last chunk get it (the files were named for an upper bound of the plan);
    without, there must be a chunk for every url."""
    planned = todo = written = 0
    chunks = iter(chunks)  # one pass: the leftover check below continues where the files stop
    for url, chunk in zip(urls, chunks, strict=False):
        planned += chunk.num_rows
        chunk = not_done(chunk, "candidate_id", done)
        todo += chunk.num_rows
        _write(chunk, url, run)
        written += 1
    # run the planner to its end even past the last file: it records its refusals (pairing rejects) as it goes
    extra = sum(chunk.num_rows for chunk in chunks)
    if extra:
        raise RuntimeError(f"the planner made {extra} rows more than the {len(urls)} plan files were sized for")
    if written < len(urls):
        if empty is None:
            raise RuntimeError(f"the planner made {written} chunks for {len(urls)} plan files")
        for url in urls[written:]:
            _write(empty, url, run)
    return planned, todo


def read_plan_file(url: str, run: Location, failure: str, timeout_s: float = 3600.0) -> pa.Table:
    """Read one plan file, waiting until the driver has written it (plans stream: the first files are read
    while later ones are still being planned)."""
    fs, path = _file(url, run)
    failure_path = _file(failure, run)[1]
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while not fs.exists(path):
        if fs.exists(failure_path):
            raise RuntimeError(f"planning failed before {url} was written")
        if time.monotonic() > deadline:
            raise TimeoutError(f"plan file {url} not written within {timeout_s:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
        fs.invalidate_cache()
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh)
