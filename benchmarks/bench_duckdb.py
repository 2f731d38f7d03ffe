"""DuckDB over a 1M-candidate synthetic run: `candidates`, `qc`, `triples` and `rejects` written through the real
ManifestStore in commit-sized shards, then every named query of manifests/query.py timed through query.connect.

    python -m benchmarks.bench_duckdb --rows 1000000 --shard-rows 256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

from manifests.query import NAMED_QUERIES, connect, run_query
from manifests.schemas import CANDIDATES, QC, REJECTS, TRIPLES
from manifests.store import ManifestStore

REASONS = ["accepted", "identity_leak", "swap_failed", "expression_lost", "no_face", "blurry", "stage_error"]


def _ids(prefix: str, idx: np.ndarray) -> pa.Array:
    return pa.array([hashlib.blake2b(f"{prefix}{i}".encode(), digest_size=8).hexdigest() for i in idx])


def _list_f32(rng, n: int, width: int) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)),
                                    pa.array(rng.standard_normal(n * width).astype(np.float32)))


def synthetic_shard(start: int, n: int, n_identities: int, rng: np.random.Generator) -> dict[str, pa.Table]:
    idx = np.arange(start, start + n)
    cid = _ids("c", idx)
    rnd = pa.array((idx % 3).astype(np.int32))  # three rounds
    ident_i = pa.array([f"id{k:05d}" for k in rng.integers(0, n_identities, n)])
    ident_j = pa.array([f"id{k:05d}" for k in rng.integers(0, n_identities, n)])
    reason_idx = rng.choice(len(REASONS), n, p=[0.4, 0.15, 0.15, 0.15, 0.05, 0.05, 0.05])
    reason = pa.array([REASONS[k] for k in reason_idx])
    accepted = reason_idx == 0
    reasons = pa.array([[] if k == 0 else [REASONS[k]] + ([REASONS[(k % 5) + 1]] if k % 2 else [])
                        for k in reason_idx], pa.list_(pa.string()))
    face = reason_idx != 4
    scores = {c: np.where(face, rng.random(n), np.nan).astype(np.float32) for c in
              ("id_sim_rt", "id_sim_rj", "expr_dist_rt", "sharpness")}
    null_if = lambda a: pa.array(a, pa.float32(), mask=~face)  # noqa: E731
    thresholds = json.dumps({"max_leak_similarity": 0.9, "min_swap_similarity": 0.9, "max_expression_distance": 0.12})
    str_col = lambda v: pa.array([v] * n)  # noqa: E731
    src_ids = [_ids(p, idx) for p in ("t", "s", "k", "w")]
    paths = lambda kind: pa.array([f"s3://bucket/run/images/{kind}/{c}.png" for c in cid.to_pylist()])  # noqa: E731
    status = pa.array(np.where(reason_idx == 6, "rejected", "ok"))
    cand = {
        "candidate_id": cid, "round": rnd, "identity_i": ident_i, "identity_j": ident_j,
        "expression": pa.array(rng.choice(["neutral", "smiling", "surprised"], n)), "target_source_id": src_ids[0],
        "s_source_id": src_ids[1], "carrier_source_id": src_ids[2], "swap_source_id": src_ids[3],
        "seed": pa.array(rng.integers(0, 2**31, n)), "expression_backend": str_col("landmark_warp"),
        "expression_model": str_col("landmark_warp"), "expression_model_sha256": str_col("0" * 64),
        "transfer_path": paths("transfer"), "transfer_sha256": str_col("1" * 64), "swap_backend": str_col("classic"),
        "swap_model": str_col("classic"), "swap_model_sha256": str_col("2" * 64), "reference_path": paths("reference"),
        "reference_sha256": str_col("3" * 64), "status": status,
        "reject_stage": pa.array(np.where(reason_idx == 6, "identity_swap", None)),
        "reject_reason": pa.array(np.where(reason_idx == 6, "stage_error", None)),
        "reject_detail": pa.nulls(n, pa.string()), "run_id": str_col("bench"), "config_fingerprint": str_col("bench"),
    }
    qc = {
        "candidate_id": cid, "round": rnd, "accepted": pa.array(accepted), "reason": reason, "reasons": reasons,
        "face_found": pa.array(face), **{c: null_if(v) for c, v in scores.items()},
        "identity_backend": str_col("dlib"), "identity_model": str_col("dlib_face_recognition_resnet_model_v1"),
        "identity_model_sha256": str_col("4" * 64), "thresholds": str_col(thresholds), "run_id": str_col("bench"),
    }
    acc = np.flatnonzero(accepted)
    take = lambda a: a.take(pa.array(acc))  # noqa: E731
    triples = {
        "triple_id": take(cid), "round": take(rnd), "identity_i": take(ident_i), "identity_j": take(ident_j),
        "expression": take(cand["expression"]), "s_source_id": take(src_ids[1]), "s_path": take(paths("aligned")),
        "s_sha256": take(str_col("5" * 64)), "r_path": take(paths("reference")), "r_sha256": take(str_col("3" * 64)),
        "t_source_id": take(src_ids[0]), "t_path": take(paths("aligned")), "t_sha256": take(str_col("6" * 64)),
        "s_embedding": _list_f32(rng, len(acc), 128),
        **{c: take(qc[c]) for c in ("id_sim_rt", "id_sim_rj", "expr_dist_rt", "sharpness")},
        "seed": take(cand["seed"]),
        **{c: take(cand[c]) for c in ("expression_model", "expression_model_sha256", "swap_model",
                                      "swap_model_sha256")},
        **{c: take(qc[c]) for c in ("identity_model", "identity_model_sha256", "thresholds")},
        "run_id": take(str_col("bench")), "config_fingerprint": take(str_col("bench")),
    }
    rej = np.flatnonzero(reason_idx == 6)
    rejects = {"item_id": cid.take(pa.array(rej)), "round": rnd.take(pa.array(rej)),
               "stage": pa.array(["identity_swap"] * len(rej)), "reason": pa.array(["stage_error"] * len(rej)),
               "detail": pa.array(["RuntimeError: synthetic"] * len(rej)), "identity": ident_i.take(pa.array(rej)),
               "path": pa.nulls(len(rej), pa.string()), "run_id": pa.array(["bench"] * len(rej))}
    # columns not synthesised here (added to the schemas later) are null; "_row" (the candidate row each row
    # belongs to) drives the sharding below and is dropped by the store's schema conform
    rows_of = {"candidates": idx - start, "qc": idx - start, "triples": acc, "rejects": rej}
    return {name: pa.table({**{f.name: cols.get(f.name, pa.nulls(len(rows_of[name]), f.type)) for f in schema},
                            "_row": pa.array(rows_of[name], pa.int64())})
            for name, schema, cols in (("candidates", CANDIDATES, cand), ("qc", QC, qc), ("triples", TRIPLES, triples),
                                       ("rejects", REJECTS, rejects))}

def write_run(root: str, rows: int, shard_rows: int, n_identities: int) -> ManifestStore:
    store = ManifestStore.open(root)
    rng = np.random.default_rng(0)
    block = 50_000  # generate in blocks, commit in shard_rows slices (what the driver's CommitBuffer writes)
    for start in range(0, rows, block):
        tables = synthetic_shard(start, min(block, rows - start), n_identities, rng)
        for off in range(0, tables["candidates"].num_rows, shard_rows):
            part = {}
            for name, t in tables.items():
                row = t["_row"].to_numpy()
                lo, hi = np.searchsorted(row, [off, off + shard_rows])
                part[name] = t.slice(lo, hi - lo)
            ids = part["candidates"]["candidate_id"]
            store.commit(f"gen-{start + off:09d}-{ids[0].as_py()}", part, {"phase": "bench"})
    return store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--shard-rows", type=int, default=256, help="rows per commit (run.commit_rows default: 256)")
    p.add_argument("--identities", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-compact", action="store_true", help="skip the compaction pass")
    p.add_argument("--out", help="run folder (default: a temp folder; reused if it holds the same --rows)")
    args = p.parse_args(argv)
    root = args.out or tempfile.mkdtemp(prefix="bench_duckdb_")
    t = time.perf_counter()
    store = ManifestStore.open(root)
    if not store.markers():
        store = write_run(root, args.rows, args.shard_rows, args.identities)
    print(f"wrote/opened {args.rows} candidates in {len(store.markers())} committed shards "
          f"({time.perf_counter() - t:.1f} s) at {root}")
    worst = {}
    for label in ("as committed", "after compaction"):
        if label == "after compaction":
            if args.no_compact:
                break
            t = time.perf_counter()
            merged = store.compact()  # what run_idi does at the end of a run
            print(f"\ncompact(): merged {merged} shards into {len(store.live_markers())} in "
                  f"{time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        con = connect(store)
        files = sum(len(v) for v in store.committed_files_by_table().values())
        print(f"[{label}] {files} committed files; connect (read markers, create views): "
              f"{time.perf_counter() - t:.2f} s")
        counts = {tbl: con.execute(f"select count(*) from {tbl}").fetchone()[0]
                  for tbl in ("candidates", "qc", "triples", "rejects")}
        print("rows:", counts)
        print(f"{'query':<18} {'first s':>8} {'best of ' + str(args.repeat) + ' s':>12}  result rows")
        worst[label] = 0.0
        for name in NAMED_QUERIES:
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                cols, out = run_query(con, name)
                times.append(time.perf_counter() - t)
            worst[label] = max(worst[label], max(times))
            print(f"{name:<18} {times[0]:8.3f} {min(times):12.3f}  {len(out)}")
        print(f"slowest single execution: {worst[label]:.3f} s ({'under' if worst[label] < 1 else 'OVER'} 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
