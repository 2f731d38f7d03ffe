"""The round plan as Parquet under the run folder (plan/round-<r>/part-<k>.parquet), read back by Ray Data.

The driver writes the plan in chunks of a few hundred rows as it makes them (stages.pairing.plan_round_chunks),
leaving out candidates already decided, and never hands Ray Data an in-memory list. Files are rewritten on
every invocation (the plan is deterministic), so a resumed run reads exactly its remaining work.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from manifests.store import atomic_write_bytes, full_url
from pipeline.done import not_done

log = logging.getLogger(__name__)


def plan_folder(run_url: str, round_index: int) -> str:
    return f"{run_url.rstrip('/')}/plan/round-{round_index}"


def write_plan_files(chunks: Iterable[pa.Table], done: pa.Array, run_url: str, round_index: int,
                     storage_options: dict | None = None) -> tuple[list[str], int, int]:
    """Write each chunk's not-yet-done rows as one Parquet file; returns (file URLs, planned rows, to-do rows)."""
    fs, folder = fsspec.core.url_to_fs(plan_folder(run_url, round_index), **(storage_options or {}))
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
    urls: list[str] = []
    planned = todo = 0
    for chunk in chunks:
        planned += chunk.num_rows
        chunk = not_done(chunk, "candidate_id", done)
        if not chunk.num_rows:
            continue
        todo += chunk.num_rows
        buf = io.BytesIO()
        pq.write_table(chunk, buf, compression="zstd")
        path = f"{folder}/part-{len(urls):06d}.parquet"
        atomic_write_bytes(fs, path, buf.getvalue())
        urls.append(full_url(fs, path))
    return urls, planned, todo
