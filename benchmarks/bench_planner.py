"""Dry run of pairing + manifest writing at CIEP100k scale (no images): synthetic `sources` rows go through the
real ManifestStore, pipeline/planning's plan_round plans the round, and the plan is committed as `candidates` shards
through the driver's CommitBuffer, as pipeline/generation_phase.py does. Reports time and peak memory per phase.

    python -m benchmarks.bench_planner --sources 100000 --per-identity 10
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

from benchmarks.common import PeakRSS
from manifests.schemas import CANDIDATES, SOURCES
from manifests.store import ManifestStore
from pipeline.commit import CommitBuffer
from pipeline.config import load_config
from pipeline.planning.round_planner import plan_for

EXPRESSIONS = ["neutral", "smiling", "surprised", "angry", "sad", "disgusted", "fearful", None]


def _lists(rng: np.random.Generator, n: int, width: int, scale: float = 1.0) -> pa.Array:
    values = pa.array((rng.standard_normal(n * width) * scale).astype(np.float32))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)), values)


def synthetic_sources(n: int, per_identity: int, seed: int = 0) -> pa.Table:
    """n source rows, `per_identity` images per identity, with the columns pairing reads at their real widths."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    identity = np.char.add("id", (idx // per_identity).astype(str)).astype(object)
    key = [f"{i}/img_{j:03d}.jpg" for i, j in zip(identity, idx % per_identity, strict=False)]
    sha = [hashlib.sha256(f"{seed}/{i}".encode()).hexdigest() for i in range(n)]  # unique file hashes
    expr = [EXPRESSIONS[k] for k in rng.integers(0, len(EXPRESSIONS), n)]
    emb = rng.standard_normal((n, 128)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cols = {
        "source_id": pa.array([s[:16] for s in sha]), "input_key": pa.array(key), "identity": pa.array(identity),
        "expression": pa.array(expr, pa.string()), "path": pa.array([f"/corpus/{k}" for k in key]),
        "file_sha256": pa.array(sha), "width": pa.array(np.full(n, 1024, np.int32)),
        "height": pa.array(np.full(n, 1024, np.int32)), "face_box": _lists(rng, n, 4, 100),
        "aligned_path": pa.array([f"/run/images/aligned/{s[:16]}.png" for s in sha]),
        "aligned_sha256": pa.array(sha), "landmarks68": _lists(rng, n, 136, 50),
        "keypoints5": _lists(rng, n, 10, 50),
        "embedding": pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * 128, 128, dtype=np.int32)),
                                              pa.array(emb.reshape(-1))),
        "embedding_model": pa.array(["dlib"] * n), "embedding_model_sha256": pa.array(["0" * 64] * n),
        "detector_model": pa.array(["dlib"] * n), "detector_model_sha256": pa.array(["0" * 64] * n),
        "expression_descriptor": _lists(rng, n, 18, 0.1), "sharpness": pa.array(rng.random(n).astype(np.float32)),
        "run_id": pa.array(["bench"] * n), "config_fingerprint": pa.array(["bench"] * n),
    }
    return pa.table([cols.get(f.name, pa.nulls(n, f.type)) for f in SOURCES], schema=SOURCES)


def candidates_from_plan(plan: pa.Table) -> pa.Table:
    """The planned rows as `candidates` rows before generation (generation columns null)."""
    n = plan.num_rows
    cols = {}
    for f in CANDIDATES:
        cols[f.name] = plan[f.name] if f.name in plan.column_names else pa.nulls(n, f.type)
    return pa.table(cols)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", type=int, default=100_000)
    p.add_argument("--per-identity", type=int, default=10)
    p.add_argument("--commit-rows", type=int, default=256, help="run.commit_rows (the default config's)")
    p.add_argument("--out", help="run folder (default: a temp folder)")
    args = p.parse_args(argv)
    cfg = load_config(overrides=[f"run.commit_rows={args.commit_rows}"])
    out = args.out or tempfile.mkdtemp(prefix="bench_planner_")
    store = ManifestStore.open(out)
    mem = PeakRSS(0.02).start()
    base = mem.reset()
    rows = []

    def phase(name: str, fn, *fn_args):
        start_rss = mem.reset()
        t = time.perf_counter()
        result = fn(*fn_args)
        dt = time.perf_counter() - t
        time.sleep(0.05)
        rows.append((name, dt, start_rss, mem.peak))
        print(f"{name:<38} {dt:8.2f} s   peak RSS {mem.peak / 2**20:7.0f} MiB "
              f"(+{(mem.peak - start_rss) / 2**20:.0f} MiB)", flush=True)
        return result

    sources = phase(f"make {args.sources} synthetic sources", synthetic_sources, args.sources, args.per_identity)

    def write_sources(table: pa.Table) -> None:
        for i in range(0, table.num_rows, 10_000):  # ingest commits shards as it streams
            chunk = table.slice(i, 10_000)
            store.commit(f"ingest-{i:08d}", {"sources": chunk})
    phase("commit sources (10k-row shards)", write_sources, sources)
    del sources
    read = phase("read sources back (committed shards)", store.read_table, "sources")
    plan = phase("plan_round", plan_for, cfg, read, 0)
    del read

    def write_candidates():
        buf = CommitBuffer(store, lambda t: {"candidates": candidates_from_plan(t)}, "candidate_id", "gen-r0-",
                           cfg.run.commit_rows, 1e9, {"phase": "generate", "round": 0})
        for i in range(0, plan.plan.num_rows, 64):  # as stage batches arrive
            buf.add(plan.plan.slice(i, 64))
        buf.flush()
        return buf.committed_rows
    committed = phase(f"commit candidates ({args.commit_rows}-row shards)", write_candidates)
    markers = phase("list commit markers", lambda: len(store.markers()))
    total = sum(r[1] for r in rows)
    mem.stop()
    print(f"planned {plan.plan.num_rows} candidates ({len(plan.refused)} pairing refusals), committed {committed} "
          f"rows in {markers} shards; total {total:.1f} s; peak RSS {max(r[3] for r in rows) / 2**20:.0f} MiB "
          f"(process start {base / 2**20:.0f} MiB; "
          f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
