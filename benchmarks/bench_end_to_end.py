"""End-to-end items/s of the CPU backends (dlib detector + embedder, landmark_warp, classic swap, dlib QC) on the
London set, and the share of time each stage's actors are busy (measured inside the actors: StageActor writes
one line per batch when CIEP_STAGE_STATS_DIR is set).

    python benchmarks/bench_end_to_end.py --identities 40 [--set key=value ...]

The London set (DeBruine & Jones 2017, CC BY 4.0, https://doi.org/10.6084/m9.figshare.5047666.v5) is used only to
exercise the pipeline, never to identify anyone. Default location: data/faces/london (102 identities, CC BY 4.0,
credit in its README).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stage_stats import format_stage_report, stage_report  # noqa: E402

from manifests.lock import RunLock  # noqa: E402
from manifests.runs import run_url  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.ray_adapter import STAGE_STATS_ENV  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LONDON = REPO / "data" / "faces" / "london"


def _batches(stats_dir: Path) -> list[dict]:
    return [json.loads(line) for f in stats_dir.glob("*.jsonl") for line in f.read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=str(LONDON), help="<root>/<identity>/<image> folders")
    p.add_argument("--identities", type=int, default=40, help="first N identities (sorted)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pipeline.commit").setLevel(logging.INFO)
    stats_dir = Path(tempfile.mkdtemp(prefix="bench_e2e_stats_"))
    os.environ[STAGE_STATS_ENV] = str(stats_dir)  # before Ray starts, so the actors inherit it
    os.environ.setdefault("CIEP_PROGRESS_BARS", "0")

    root = Path(args.corpus)
    idents = sorted(d.name for d in root.iterdir() if d.is_dir())[: args.identities]
    work = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    index = work / "index.csv"
    with index.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["identity", "path", "expression"])
        for ident in idents:
            for f in sorted((root / ident).iterdir()):
                if f.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    w.writerow([ident, f"{ident}/{f.name}", f.stem.split("_")[0].lower()])
    cfg = load_config(overrides=[f"corpus.root={root}", f"corpus.index={index}", f"run.output_root={work / 'runs'}",
                                 "run.name=e2e", *args.overrides])

    from pipeline.ray_adapter import init_ray
    from pipeline.round import GENERATION_STAGES, run_generation, run_ingest
    from pipeline.run_idi import prepare_run
    from stages.ingest import IngestStage
    init_ray(cfg.ray)
    import ray
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB "
          f"RAM; Ray CPUs {cpus:g}; Python {platform.python_version()}")
    print(f"corpus: {len(idents)} London identities from {root}")
    for stage in [IngestStage, *GENERATION_STAGES]:
        r = stage(cfg, "").resources
        print(f"  {stage.name:<20} num_cpus {r.num_cpus}, batch {r.batch_size}, concurrency {r.concurrency}")
    with RunLock(run_url(cfg.run.output_root, cfg.resolved_run_id())):
        url, store, _ = prepare_run(cfg)
        t0 = time.time()
        ingest = run_ingest(cfg, store, url)
        t1 = time.time()
        gen = run_generation(cfg, store, url, 0)
        t2 = time.time()
    qc = store.read_table("qc", ["accepted"])
    accepted = sum(qc.column("accepted").to_pylist())
    print(f"\ningest: {ingest.todo} images in {t1 - t0:.1f} s = {ingest.todo / (t1 - t0):.2f} images/s")
    print(format_stage_report(stage_report(stats_dir, t0, t1), ["ingest"]))
    print(f"\ngeneration: {gen.todo} candidates in {t2 - t1:.1f} s = {gen.todo / (t2 - t1):.2f} candidates/s "
          f"({accepted} accepted)")
    names = [s.name for s in GENERATION_STAGES]
    print(format_stage_report(stage_report(stats_dir, t1, t2), names))
    # steady state: from the moment the last stage has work (pipeline full) to the last batch
    first_last = min((r["start"] for r in _batches(stats_dir) if r["stage"] == names[-1] and r["start"] >= t1),
                     default=t1)
    print(f"steady state ({t2 - first_last:.1f} s from the first {names[-1]} batch to the end):")
    print(format_stage_report(stage_report(stats_dir, first_last, t2), names))
    print(f"\nend to end: {ingest.todo} images -> {gen.todo} candidates -> {accepted} triples in {t2 - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
