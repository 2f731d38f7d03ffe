"""What checksums cost on a London round: hashing on commit (page CRCs + sha256/md5 of every shard, re-encoded
here shard by shard with and without them) and `ciep fsck` (every shard and image re-hashed), as shares of the
round's wall time. Target (issue 20): <= 5 % each.

    python -m benchmarks.bench_integrity --identities 20 [--append benchmarks/RESULTS.md] [--set key=value ...]

The London set (DeBruine & Jones 2017, CC BY 4.0) only exercises the pipeline.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import LONDON, machine, print_section
from manifests.fsck import check_run
from manifests.integrity import file_digest, parquet_bytes, read_shard
from manifests.store import ManifestStore
from pipeline.config import load_config

HEADING = "## Integrity: checksums on commit and `ciep fsck` (issue 20)"


def _commit_cost(store: ManifestStore, repeats: int = 15) -> tuple[float, float, int, int]:
    """(seconds to encode every committed shard as before, seconds with page checksums + sha256/md5, shards,
    bytes), best of `repeats` each."""
    tables = [(t, read_shard(store.fs, p, schema=store.schemas[t]))
              for t, paths in store.committed_files_by_table().items() for p in paths]

    def plain() -> int:
        n = 0
        for _, t in tables:
            buf = io.BytesIO()
            pq.write_table(t, buf, compression="zstd")
            n += len(buf.getvalue())
        return n

    def checked() -> int:
        n = 0
        for _, t in tables:
            data = parquet_bytes(t)
            file_digest(data)
            n += len(data)
        return n

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(plain), best(checked), len(tables), checked()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=str(LONDON))
    p.add_argument("--identities", type=int, default=20, help="first N London identities (sorted)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--append", help="replace this benchmark's section of a RESULTS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("CIEP_PROGRESS_BARS", "0")
    from pipeline.run_idi import run_idi

    work = Path(tempfile.mkdtemp(prefix="bench_integrity_"))
    corpus = work / "corpus"
    for ident in sorted(d.name for d in Path(args.corpus).iterdir() if d.is_dir())[: args.identities]:
        shutil.copytree(Path(args.corpus) / ident, corpus / ident)
    cfg = load_config(overrides=[f"corpus.root={corpus}", f"run.output_root={work / 'runs'}", "run.name=integrity",
                                 *args.overrides])
    t0 = time.perf_counter()
    result = run_idi(cfg)
    round_s = time.perf_counter() - t0
    run = result["timing"]["run_url"]
    store = ManifestStore.open(run)
    plain_s, checked_s, shards, nbytes = _commit_cost(store)
    fsck = min((check_run(run) for _ in range(3)), key=lambda r: r.seconds)
    manifests_only = min((check_run(run, images=False) for _ in range(3)), key=lambda r: r.seconds)
    assert fsck.ok, fsck.summary()
    extra = checked_s - plain_s
    text = (f"{HEADING}\n\n"
            f"Machine: {machine()}. Command: `python -m benchmarks.bench_integrity --identities {args.identities}`"
            f"{''.join(f' --set {o}' for o in args.overrides)}.\n\n"
            f"| what | seconds | share of the round |\n|---|---|---|\n"
            f"| London round ({args.identities} identities, {result['summary'].get('triples')} triples), wall "
            f"| {round_s:.1f} | 100 % |\n"
            f"| commit: {shards} shards ({nbytes / 1e6:.2f} MB) encoded without checksums | {plain_s:.3f} | "
            f"{100 * plain_s / round_s:.2f} % |\n"
            f"| commit: the same with page CRCs + sha256 + md5 (extra: {extra * 1e3:.1f} ms) | {checked_s:.3f} | "
            f"{100 * extra / round_s:.2f} % extra |\n"
            f"| `ciep fsck` (manifests + {fsck.images} images, {fsck.image_bytes / 1e6:.1f} MB) | {fsck.seconds:.2f} | "
            f"{100 * fsck.seconds / round_s:.2f} % |\n"
            f"| `ciep fsck --no-images` ({manifests_only.files} files) | {manifests_only.seconds:.3f} | "
            f"{100 * manifests_only.seconds / round_s:.2f} % |\n\n"
            f"Commit cost is measured by re-encoding the run's committed shards here (best of 15), since the round "
            f"commits them inside Ray workers; fsck is best of 3 in one process (8 threads).\n")
    print_section(text, HEADING, args.append)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
