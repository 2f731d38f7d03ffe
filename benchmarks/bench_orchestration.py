"""Orchestration overhead: the generation DAG with no-op model stages (stages/noop.py: real image read/write, no
model) on N items, through the real pipeline: plan_round over committed `sources` written as Parquet plan files,
pipeline.ray_adapter actor pools, the worker-side commit stage (pipeline.generation_phase.run_generation); then, in
the same Ray session, the ANCHOR: a plain Ray Data pipeline over the same plan files and the same no-op stages (one
callable class per stage, same resources) ending in `Dataset.write_parquet` of the same result rows.

    python -m benchmarks.bench_orchestration --sizes 1000 10000 [--repeat 3]

Before anything is timed, one small pipeline run and its anchor start every worker process and import everything.
Each size is then measured `--repeat` times as a pair, the order alternating (pipeline then anchor, anchor then
pipeline, ...; an anchor that goes first reads the previous pair's plan files, which have the same shape), so that
neither side gains from going second. Reports per pair the ratio, and per size the median ratio. Reports per
pair: wall time, items/s, wall ms per item, in-stage busy ms per item, CPU-ms per item outside
stage code (the orchestration overhead: Ray Data scheduling, serialisation, driver commits, idle), the driver's
RSS (start, peak, end), and whether the largest size took at most (size ratio x 1.1) the smallest one's time.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.bench_planner import synthetic_sources
from benchmarks.common import DEMO_CORPUS, PeakRSS, machine
from benchmarks.stage_stats import format_stage_report, stage_report
from manifests.artifacts import ArtifactStore
from manifests.store import ManifestStore
from pipeline.config import load_config
from pipeline.ray_adapter import STAGE_STATS_ENV


def real_images(run_url: str, n: int) -> list[str]:
    """n 256x256 aligned-crop-sized PNGs (London demo faces) written into the run; their URLs."""
    files = sorted(DEMO_CORPUS.glob("*/*.jpg"))
    store = ArtifactStore(run_url)
    urls = []
    for k in range(n):
        bgr = cv2.imread(str(files[k % len(files)]))
        rgb = cv2.cvtColor(cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        if k >= len(files):  # distinct pixels per image
            rgb = np.roll(rgb, k, axis=1)
        urls.append(store.put("aligned", f"bench{k:04d}", rgb)[0])
    return urls


class PlainStage:
    """The anchor's callable class: builds one no-op stage per actor and maps batches through it."""

    def __init__(self, stage_cls, section, context) -> None:
        from stages.base import make_stage
        self.stage = make_stage(stage_cls, section, context)

    def __call__(self, batch):
        return self.stage.process_batch(batch)


def run_anchor(cfg, url: str, n: int) -> float:
    """Seconds for the plain Ray Data pipeline: plan files -> 3 no-op stages -> write_parquet."""
    import ray

    from core.location import Location
    from pipeline.planning.files import failure_url, plan_folder
    from pipeline.ray_adapter import dataset_from_plan_files, stage_chain
    from stages.noop import NOOP_GENERATION_STAGES
    run = Location(url)
    files = sorted(str(p) for p in Path(plan_folder(run, 0).path).glob("*.parquet"))
    out = Path(tempfile.mkdtemp(prefix=f"bench_orch_anchor_{n}_"))
    t0 = time.time()
    # the plan files name images by source row (PLAN_INDEX_SCHEMA): the anchor's read tasks gather
    # them from the same features table the pipeline's do (pipeline/planning/ray_features.py)
    from manifests.schemas import PLAN_FEATURE_COLUMNS
    from manifests.store import ManifestStore
    features = ray.put(ManifestStore.open(url).read_table("sources", PLAN_FEATURE_COLUMNS).combine_chunks())
    ds = dataset_from_plan_files(files, failure_url(run, 0), run, features)
    chain = stage_chain(cfg, NOOP_GENERATION_STAGES, run)
    for cls, section in zip(chain.classes, chain.sections, strict=True):
        res = section.resources
        ds = ds.map_batches(PlainStage, fn_constructor_args=(cls, section, chain.context),
                            batch_size=res.batch_size,
                            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1),
                            num_cpus=res.num_cpus)
    ds.write_parquet(str(out), ray_remote_args={"num_cpus": 0.25})  # 1 CPU (the default) never frees here
    wall = time.time() - t0
    import pyarrow.parquet as pq
    rows = pq.read_table(str(out), columns=["candidate_id"]).num_rows
    assert rows == n, rows
    return wall


def run_pipeline(n: int, cfg_overrides: list[str], stats_dir: Path) -> dict:
    """One `run_generation` of n items on a fresh run folder; its wall time, driver RSS and stage report."""
    import pyarrow as pa

    from pipeline.generation_phase import run_generation
    from stages.noop import NOOP_GENERATION_STAGES

    out = Path(tempfile.mkdtemp(prefix=f"bench_orch_{n}_"))
    cfg = load_config(overrides=[f"run.output_root={out}", f"run.name=orch{n}", *cfg_overrides])
    url = str(out / cfg.resolved_run_id())
    store = ManifestStore.open(url)
    images = real_images(url, 100)
    sources = synthetic_sources(n, per_identity=10, seed=n)
    aligned = pa.array([images[i % len(images)] for i in range(n)])
    sources = sources.set_column(sources.schema.get_field_index("aligned_path"), "aligned_path", aligned)
    for i in range(0, n, 10_000):
        store.commit(f"ingest-{i:08d}", {"sources": sources.slice(i, 10_000)})
    del sources
    mon = PeakRSS(0.1).start()
    t0 = time.time()
    stats = run_generation(cfg, store, url, 0, stages=NOOP_GENERATION_STAGES)
    t1 = time.time()
    rss = mon.stop()
    report = stage_report(stats_dir, t0, t1)
    qc_rows = store.read_table("qc", ["candidate_id"]).num_rows
    assert stats.todo == n and qc_rows == n, (stats, qc_rows)
    return dict(n=n, wall=t1 - t0, rss_start=rss[0], rss_peak=max(rss), rss_end=rss[-1], rss=rss, report=report,
                shards=len(store.markers()), cfg=cfg, url=url)


def run_pairs(n: int, repeat: int, cfg_overrides: list[str], stats_dir: Path) -> list[dict]:
    """`repeat` (pipeline, anchor) pairs, the order alternating: an anchor run first reads the last pair's plan."""
    pairs: list[dict] = []
    for k in range(repeat):
        if k % 2 == 0:
            r = run_pipeline(n, cfg_overrides, stats_dir)
            r.update(anchor=run_anchor(r["cfg"], r["url"], n), order="pipeline first")
        else:
            anchor = run_anchor(pairs[-1]["cfg"], pairs[-1]["url"], n)
            r = run_pipeline(n, cfg_overrides, stats_dir)
            r.update(anchor=anchor, order="anchor first")
        pairs.append(r)
    return pairs


def _median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--repeat", type=int, default=3, help="(pipeline, anchor) pairs per size, order alternating")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    stats_dir = Path(tempfile.mkdtemp(prefix="bench_orch_stats_"))
    os.environ[STAGE_STATS_ENV] = str(stats_dir)  # before Ray starts, so the actors inherit it
    os.environ.setdefault("CIEP_PROGRESS_BARS", "0")
    from pipeline.ray_adapter import init_ray
    cfg0 = load_config(overrides=args.overrides)
    init_ray(cfg0.ray)
    import ray
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"machine: {machine()}; Ray CPUs {cpus:g}")
    warm = run_pipeline(200, args.overrides, stats_dir)  # worker processes, imports: not timed
    run_anchor(warm["cfg"], warm["url"], 200)
    results = []
    for n in args.sizes:
        pairs = run_pairs(n, args.repeat, args.overrides, stats_dir)
        for k, r in enumerate(pairs, 1):
            busy = sum(s["busy_s"] for s in r["report"])
            print(f"\n== {n} items, pair {k} ({r['order']}): {r['wall']:.1f} s, {n / r['wall']:.1f} items/s, "
                  f"{1000 * r['wall'] / n:.2f} ms/item wall;"
                  f" in-stage busy {1000 * busy / n:.2f} ms/item; CPU-ms/item outside stage code "
                  f"{1000 * (r['wall'] * cpus - busy) / n:.2f}; {r['shards']} commits")
            q = r["rss"]
            at = [q[min(len(q) - 1, int(len(q) * f))] / 2**20 for f in (0.1, 0.25, 0.5, 0.75, 0.999)]
            print(f"   driver RSS start {r['rss_start'] / 2**20:.0f} MiB, peak {r['rss_peak'] / 2**20:.0f} MiB, "
                  f"end {r['rss_end'] / 2**20:.0f} MiB; at 10/25/50/75/100% of the run: "
                  + " / ".join(f"{v:.0f}" for v in at))
            print(format_stage_report(r["report"], ["noop_transfer", "noop_swap", "noop_qc"]))
            print(f"   anchor (plain Ray Data: plan files -> 3 no-op stages -> write_parquet): {r['anchor']:.1f} s; "
                  f"pipeline / anchor = {r['wall'] / r['anchor']:.2f}x (target <= 1.2x)")
        ratios = [r["wall"] / r["anchor"] for r in pairs]
        print(f"\n== {n} items, {len(pairs)} pairs: pipeline / anchor " + ", ".join(f"{x:.2f}x" for x in ratios)
              + f"; median {_median(ratios):.2f}x, total {sum(r['wall'] for r in pairs):.1f} s / "
              f"{sum(r['anchor'] for r in pairs):.1f} s = "
              f"{sum(r['wall'] for r in pairs) / sum(r['anchor'] for r in pairs):.2f}x (target <= 1.2x)")
        results.append(min(pairs, key=lambda r: r["wall"]))
    if len(results) > 1:
        a, b = results[0], results[-1]
        ratio = b["wall"] / a["wall"]
        limit = (b["n"] / a["n"]) * 1.1
        print(f"\nscaling: {b['n']} items took {ratio:.2f}x the time of {a['n']} (limit {limit:.1f}x: "
              f"{'OK' if ratio <= limit else 'NOT linear'}); driver peak RSS {a['rss_peak'] / 2**20:.0f} -> "
              f"{b['rss_peak'] / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
