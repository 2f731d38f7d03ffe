"""Ingest's dataset set-up at scale (no images): a listing-like table (a path per image and a few small columns) as
the ingest phase's Ray Data dataset of `--rows-per-block`-row blocks, built by `pipeline.ray_adapter
dataset_from_table` (a lazy datasource over the table in the object store) and, for comparison, by the previous
`ray.data.from_arrow` of the table's slices (one metadata task per block before the dataset exists). Reports, per
size, the seconds from the call to the dataset object (dataset ready) and to its first row (`iter_batches`).

    python -m benchmarks.bench_ingest_dataset --rows 100000 1000000 --from-arrow-max 20000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc


def listing(n: int) -> pa.Table:
    """n listing rows: input_key and path strings as list_corpus makes them, identity, attempt."""
    i = pa.array(range(n), pa.int64())
    identity = pc.binary_join_element_wise("person_", pc.cast(pc.divide(i, 10), pa.string()), "")
    key = pc.binary_join_element_wise(identity, pc.utf8_lpad(pc.cast(i, pa.string()), 7, "0"), "/img_")
    key = pc.binary_join_element_wise(key, ".jpg", "")
    return pa.table({"input_key": key, "identity": identity,
                     "path": pc.binary_join_element_wise("/data/corpus", key, "/"),
                     "attempt": pa.nulls(n, pa.int32()).fill_null(0)})


def from_arrow_dataset(table: pa.Table, rows_per_block: int):  # type: ignore[no-untyped-def]
    """The previous dataset_from_table (main before issue 12's lazy ingest)."""
    import ray.data
    blocks = [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)] or [table]
    return ray.data.from_arrow(blocks)


def measure(build: Callable[[pa.Table, int], object], table: pa.Table, rows_per_block: int) -> dict[str, float]:
    """Seconds from the call to the dataset object and to its first row."""
    started = time.monotonic()
    ds = build(table, rows_per_block)
    ready = time.monotonic() - started
    first = next(iter(ds.iter_batches(batch_size=None, batch_format="pyarrow")))  # type: ignore[attr-defined]
    assert first.num_rows > 0
    return {"ready_s": round(ready, 3), "first_row_s": round(time.monotonic() - started, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--rows-per-block", type=int, default=8, help="2 x the ingest batch (demo config: 8)")
    p.add_argument("--from-arrow-max", type=int, default=20_000,
                   help="largest table also measured with from_arrow (one task per block: ~1 h at 1M rows)")
    p.add_argument("--num-cpus", type=int, default=2)
    args = p.parse_args(argv)
    import ray

    from pipeline.ray_adapter import dataset_from_table
    os.environ.setdefault("CIEP_PROGRESS_BARS", "0")
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"machine: {os.cpu_count()} cores; Ray {ray.__version__}; load {os.getloadavg()[0]:.1f}", flush=True)
    # Ray Data's one-time start and its pool of read workers (up to 8 tasks of 0.25 CPU at a time), before timing
    for _ in dataset_from_table(listing(5000), args.rows_per_block).iter_batches(batch_size=None):
        pass
    results = []
    sizes = sorted(set(args.rows) | {n for n in (args.from_arrow_max,) if n})
    for n in sizes:
        table = listing(n)
        builds: dict[str, Callable[[pa.Table, int], object]] = {"lazy": dataset_from_table}
        if n <= args.from_arrow_max:
            builds["from_arrow"] = from_arrow_dataset
        for name, build in builds.items():
            r = dict(rows=n, blocks=-(-n // args.rows_per_block), method=name, **measure(build, table,
                                                                                        args.rows_per_block),
                     load=round(os.getloadavg()[0], 1))
            results.append(r)
            print(json.dumps(r), flush=True)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
