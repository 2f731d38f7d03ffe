"""Dry run at scale (no images): N synthetic sources committed by a child process, then in a fresh driver process
the real `pipeline.generation_phase.run_generation` with one image-free stage (stages/noop.py DryGenerationStage): read
sources, plan the round into Parquet plan files, stream them through Ray Data and the worker-side commit stage.
Measures, from planning start, the first item out of the generation stage (the end of the stage's first batch,
from the actors' STAGE_STATS_ENV lines) and the first committed shard (the commit stage's first 256 rows), when the
planner's clustering ran, and the driver's peak RSS up to `--watch` seconds after the first commit, then stops (a
1M-item dry run to the end is not the point). BENCH_TIMELINE=1 adds the first start/end of every Ray task kind
(`ray.timeline`); `--cache DIR` makes the sources once and hard-links them into each run.

    python -m benchmarks.bench_plan_stream --sources 100000 1000000 --cache /tmp/plan_stream_sources
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.common import REPO, machine

CHILD = "benchmarks.bench_plan_stream"  # this module, run again in a child process (PYTHONPATH: the repository)


def make_sources(out: str, n: int, per_identity: int) -> None:
    from benchmarks.bench_planner import synthetic_sources
    from manifests.store import ManifestStore
    store = ManifestStore.open(out)
    for i in range(0, n, 50_000):
        sources = synthetic_sources(min(50_000, n - i), per_identity, seed=i)
        ids = sources["identity"].to_pylist()  # distinct identities per block
        import pyarrow as pa
        sources = sources.set_column(sources.schema.get_field_index("identity"), "identity",
                                     pa.array([f"b{i}-{x}" for x in ids]))
        store.commit(f"ingest-{i:09d}", {"sources": sources})


def _first_stage_batch(stats_dir: Path) -> tuple[float, float] | None:
    """Wall-clock (start, end) of the first batch the generation stage finished (STAGE_STATS_ENV lines)."""
    ends = []
    for f in stats_dir.glob("*.jsonl"):
        for line in f.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                ends.append((row["end"], row["start"]))
    return (min(ends)[1], min(ends)[0]) if ends else None


def _timeline_firsts(t0_wall: float) -> dict[str, list[float]]:
    """Per Ray task/actor event name: [first start, first end, count] in seconds after planning start."""
    import ray
    firsts: dict[str, list[float]] = {}
    for ev in ray.timeline():
        if ev.get("ph") != "X" or "ts" not in ev:
            continue
        start = ev["ts"] / 1e6 - t0_wall
        end = start + ev.get("dur", 0) / 1e6
        name = str(ev.get("name", "?"))
        if name not in firsts:
            firsts[name] = [start, end, 0]
        f = firsts[name]
        f[0], f[1], f[2] = min(f[0], start), min(f[1], end), f[2] + 1
    return {k: [round(v[0], 1), round(v[1], 1), int(v[2])] for k, v in sorted(firsts.items(), key=lambda x: x[1][0])}


def _store_stats() -> dict[str, int]:
    """Ray's object store on this node now: the bytes the raylet's plasma file has allocated (pages it has
    touched: a high-water mark) and the size of the Ray session folder (its logs and spilled objects). Read from the
    files, not by a raylet call, which timed out under load and missed samples."""
    import ray
    node = ray._private.worker._global_node
    raylet = node.all_processes["raylet"][0].process.pid
    used = 0
    for fd in Path(f"/proc/{raylet}/fd").iterdir():
        try:
            if "plasma" in os.readlink(fd):
                used = max(used, os.stat(fd).st_blocks * 512)
        except OSError:
            continue
    return {"used": used, "spilled": int(_disk_mib(node.get_session_dir_path()) * 2**20)}


def _disk_mib(path: str) -> float:
    """Bytes under `path` (du: hard-linked cached sources counted once, as stored), in MiB."""
    out = subprocess.run(["du", "-sk", path], capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1024 if out else float("nan")


def driver(out: str, watch: float, overrides: list[str], object_store_gb: float | None = None) -> dict:
    """Runs in a fresh process: the generation phase until `watch` s after the first commit."""
    from manifests.store import ManifestStore
    from pipeline.config import load_config
    from pipeline.generation_phase import run_generation
    from pipeline.ray_adapter import STAGE_STATS_ENV, init_ray
    from stages.noop import DryGenerationStage

    stats_dir = Path(out).parent / "stage_stats"
    stats_dir.mkdir(exist_ok=True)
    os.environ[STAGE_STATS_ENV] = str(stats_dir)  # before Ray starts: the actors inherit it
    proc = psutil.Process()
    if os.environ.get("BENCH_SWITCH_INTERVAL"):  # experiment: GIL switch interval of the driver (default 0.005 s)
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    cfg = load_config(overrides=[f"run.output_root={Path(out).parent}", f"run.run_id={Path(out).name}", *overrides])
    if object_store_gb:  # a local Ray with its object store capped (the machine is shared); else as configured
        import ray
        ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 object_store_memory=int(object_store_gb * 2**30))
        ray.data.DataContext.get_current().enable_progress_bars = False
    init_ray(cfg.ray)
    store = ManifestStore.open(out)
    result: dict = {"rss_after_ray_mib": proc.memory_info().rss / 2**20}
    peak = [0]
    stop = threading.Event()
    commits = Path(out) / "manifests" / "_commits"
    plan_dir = Path(out) / "plan" / "round-0"

    loads: list[float] = []
    store_peak = {"used": 0, "spilled": 0}

    def store_monitor() -> None:  # every 2 s: a raylet call, kept off the 50 ms RSS loop
        while not stop.is_set():
            try:
                for k, v in _store_stats().items():
                    store_peak[k] = max(store_peak[k], v)
            except Exception:  # noqa: BLE001 - a missed sample only
                pass
            result["object_store_peak_mib"] = store_peak["used"] / 2**20
            result["session_folder_peak_mib"] = store_peak["spilled"] / 2**20
            time.sleep(2.0)

    def monitor(t0: float) -> None:
        first = None
        last_load = 0.0
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            now = time.monotonic()
            if now - last_load >= 1.0:  # the 1-minute load average while measuring
                loads.append(os.getloadavg()[0])
                last_load = now
                result["load_min_max"] = [min(loads), max(loads)]
            if "first_plan_file_s" not in result and plan_dir.exists() and any(plan_dir.iterdir()):
                result["first_plan_file_s"] = now - t0
            if first is None and any(p.name.startswith("gen-r0-") for p in commits.iterdir()):
                first = now
                result["first_commit_s"] = now - t0
            if first is not None and now - first >= watch:
                result["peak_rss_mib"] = peak[0] / 2**20
                result["run_folder_disk_mib"] = _disk_mib(out)
                result["plan_files"] = len(list(plan_dir.iterdir()))
                result["committed_shards_at_stop"] = sum(1 for p in commits.iterdir() if p.name.startswith("gen-"))
                first_batch = _first_stage_batch(stats_dir)
                if first_batch is not None:
                    result["first_stage_batch_start_s"] = first_batch[0] - t0_wall
                    result["first_item_s"] = first_batch[1] - t0_wall
                if os.environ.get("BENCH_TIMELINE"):
                    result["timeline"] = _timeline_firsts(t0_wall)
                print(json.dumps(result), flush=True)
                import ray
                node = ray._private.worker._global_node
                if node is not None:
                    node.kill_all_processes(check_alive=False, allow_graceful=False)
                os._exit(0)
            time.sleep(0.05)

    t0, t0_wall = time.monotonic(), time.time()
    if os.environ.get("BENCH_PLANNER_PAUSE"):  # experiment: the planner thread sleeps between plan files
        import pipeline.planning.round_planner
        pause, write_files = float(os.environ["BENCH_PLANNER_PAUSE"]), pipeline.planning.round_planner.write_plan_files

        def paused(chunks, *args, **kwargs):  # type: ignore[no-untyped-def]
            def slow():  # type: ignore[no-untyped-def]
                for chunk in chunks:
                    yield chunk
                    time.sleep(pause)
            return write_files(slow(), *args, **kwargs)
        pipeline.planning.round_planner.write_plan_files = paused  # type: ignore[assignment]

    class PlanDone(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "sources read for planning" in record.getMessage():
                result["sources_read_s"] = time.monotonic() - t0
                result["rss_at_sources_read_mib"] = proc.memory_info().rss / 2**20
            if "identities clustered" in record.getMessage():  # wall-clock span logged by the planner
                result["clusters_s"] = [round(float(record.args[2]) - t0_wall, 1),  # type: ignore[index]
                                        round(float(record.args[3]) - t0_wall, 1)]  # type: ignore[index]
            if "candidates planned" in record.getMessage() and "plan_written_s" not in result:
                result["plan_written_s"] = time.monotonic() - t0
                result["rss_at_plan_written_mib"] = proc.memory_info().rss / 2**20
    for name in ("pipeline.generation_phase", "pipeline.planning.round_planner"):  # sources read; candidates planned
        logging.getLogger(name).addHandler(PlanDone())
        logging.getLogger(name).setLevel(logging.INFO)
    threading.Thread(target=monitor, args=(t0,), daemon=True).start()
    threading.Thread(target=store_monitor, daemon=True).start()
    run_generation(cfg, store, out, 0, stages=[DryGenerationStage])
    stop.set()
    result.update(peak_rss_mib=peak[0] / 2**20, finished_s=time.monotonic() - t0)
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", type=int, nargs="+", default=[100_000])
    p.add_argument("--per-identity", type=int, default=10)
    p.add_argument("--watch", type=float, default=20.0, help="seconds to keep streaming after the first commit")
    p.add_argument("--override", action="append", default=[], help="config override for the driver (repeatable)")
    p.add_argument("--cache", help="keep the synthetic sources here and reuse them (hard-linked into each run)")
    p.add_argument("--object-store-gb", type=float, help="cap Ray's object store (a local Ray started here)")
    p.add_argument("--child", choices=["sources", "driver"])
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.child == "sources":
        make_sources(args.out, args.sources[0], args.per_identity)
        return 0
    if args.child == "driver":
        driver(args.out, args.watch, args.override, args.object_store_gb)
        return 0
    env = dict(os.environ, PYTHONPATH=str(REPO), CIEP_PROGRESS_BARS="0")
    print(f"machine: {machine()}; load {os.getloadavg()[0]:.1f}")
    for n in args.sources:
        out = os.path.join(tempfile.mkdtemp(prefix=f"bench_stream_{n}_"), f"dry{n}")
        made_at = os.path.join(args.cache, f"sources_{n}_{args.per_identity}") if args.cache else out
        t = time.monotonic()
        if not os.path.exists(made_at):
            subprocess.run([sys.executable, "-m", CHILD, "--child", "sources", "--sources", str(n), "--out",
                            made_at + ".tmp" if args.cache else out, "--per-identity", str(args.per_identity)],
                           check=True, env=env)
            if args.cache:
                os.rename(made_at + ".tmp", made_at)
        if args.cache:  # the run only adds files (atomic writes): hard links keep the cached sources intact
            subprocess.run(["cp", "-al", made_at, out], check=True)
        made = time.monotonic() - t
        res = subprocess.run([sys.executable, "-m", CHILD, "--child", "driver", "--out", out, "--watch",
                              str(args.watch), *(f"--override={o}" for o in args.override),
                              *([f"--object-store-gb={args.object_store_gb}"] if args.object_store_gb else [])],
                             env=env, capture_output=True, text=True)
        if res.returncode:
            print(res.stdout[-3000:], res.stderr[-6000:], sep="\n")
            raise SystemExit(f"driver failed ({res.returncode})")
        line = [x for x in res.stdout.splitlines() if x.startswith("{")][-1]
        r = json.loads(line)
        print(f"{n} sources ({made:.0f} s to make): sources read {r.get('sources_read_s', float('nan')):.1f} s (RSS "
              f"then {r.get('rss_at_sources_read_mib', float('nan')):.0f} MiB), first plan file "
              f"{r.get('first_plan_file_s', float('nan')):.1f} s, "
              f"planned (duplicates, clusters, size) {r.get('plan_written_s', float('nan')):.1f} s (RSS then "
              f"{r.get('rss_at_plan_written_mib', float('nan')):.0f} MiB), "
              f"first committed shard {r.get('first_commit_s', float('nan')):.1f} s after planning start; driver "
              f"RSS after ray.init {r['rss_after_ray_mib']:.0f} MiB, peak {r['peak_rss_mib']:.0f} MiB; "
              f"{r.get('plan_files')} plan files; load while measuring {r.get('load_min_max')}", flush=True)
        print(f"  object store peak {r.get('object_store_peak_mib', float('nan')):.0f} MiB (plasma pages); Ray "
              f"session folder (spilled objects, logs) peak {r.get('session_folder_peak_mib', float('nan')):.0f} "
              f"MiB; run folder on disk at the stop "
              f"{r.get('run_folder_disk_mib', float('nan')):.0f} MiB (sources included)", flush=True)
        print(f"  clustering {r.get('clusters_s')} s; first item out of the generation stage "
              f"{r.get('first_item_s', float('nan')):.1f} s (its batch started at "
              f"{r.get('first_stage_batch_start_s', float('nan')):.1f} s)", flush=True)
        if "timeline" in r:
            for name, (start, end, count) in r["timeline"].items():
                print(f"  timeline {name}: first start {start} s, first end {end} s, {count} events", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
