"""Release export throughput and peak memory for releases of growing size: memory must stay flat.

Releases are synthetic (manifests/synthetic.py) with the real schemas: a pool of real face images (the demo
corpus, centre-cropped to 256x256 PNG like the aligned crops) reused under new triple ids, so a release of
N triples holds N manifest rows and every export reads and writes 3 N images. Each step (release create,
then each export format) runs in a fresh child process; its peak RSS (VmHWM) is reported together with
the RSS after imports (VmHWM is reset after imports), so the difference is what the step itself held.

    python -m benchmarks.bench_export [--sizes 500 2000 8000] [--append benchmarks/RESULTS.md]

`--publish N` measures instead the issue-12 publish path on Ray Data for a release of N triples: export
throughput per format with a local Ray of 1 and then 2 worker CPUs (fresh processes, workers warmed up,
repeated), release creation on Ray with 1 and 2 CPUs, and the image bytes a second release of the same
triples adds to the releases root's shared pool (measured on disk).

    python -m benchmarks.bench_export --publish 960 --tasks 8 --repeat 2 --append benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import DEMO_CORPUS, REPO, cores, cpu_name, load_average, print_section

HEADING = "## Exports"
PUBLISH_HEADING = "## Publishing on Ray Data (parallel exports and releases, shared image pool)"
FORMATS = ("hf-parquet", "webdataset", "imagefolder")
STEPS = ("create", *FORMATS)


def _status_mb(key: str) -> float:
    """VmRSS / VmHWM of this process from /proc (ru_maxrss would include the parent's peak: it survives exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak measured is the step's, not the imports'."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _pool(size: int = 256) -> list:
    import numpy as np
    from PIL import Image

    out = []
    for path in sorted(DEMO_CORPUS.glob("*/*.jpg")):
        with Image.open(path) as im:
            w, h = im.size
            side = min(w, h)
            box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
            out.append(np.asarray(im.convert("RGB").crop(box).resize((size, size), Image.BILINEAR)))
    return out


def child(args: argparse.Namespace) -> dict:
    """One measured step in this (fresh) process; prints a JSON line."""
    import duckdb  # noqa: F401  (imported by the step anyway; counted in the baseline, not the step)
    import PIL.Image  # noqa: F401

    from publish.export import export_release
    from publish.release.create import create_release
    from publish.release.read import open_release

    base_rss = _status_mb("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    if args.step == "create":
        rel = create_release(args.run, args.name, args.releases, splits={"train": 1.0})
        n, mb = rel.info["stats"]["triples"], rel.info["stats"]["image_bytes"] / 1e6
    else:
        stats = export_release(open_release(args.releases, args.name), args.step, args.out)
        n, mb = stats.triples, stats.bytes_written / 1e6
    seconds = time.perf_counter() - start
    return dict(step=args.step, triples=n, mb=mb, seconds=seconds, base_rss_mb=base_rss,
                peak_rss_mb=_status_mb("VmHWM"))


def publish_child(args: argparse.Namespace) -> dict:
    """One Ray step in this (fresh) process: a local Ray of `--cpus` CPUs, warmed up, then the step timed."""
    import ray
    import ray.data

    from pipeline.publish_on_ray import ray_file_mapper, ray_shard_mapper
    from publish.export import export_release
    from publish.release.create import create_release
    from publish.release.read import open_release

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level=logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # Start every worker process before timing (Ray starts them lazily, ~1 s each on a loaded machine).
    ray.data.range(4 * args.cpus, override_num_blocks=4 * args.cpus).map(lambda r: r, num_cpus=1).take_all()
    start = time.perf_counter()
    if args.step == "ray-create":
        rel = create_release(args.run, args.name, args.releases, splits={"train": 1.0}, commit_rows=args.rows,
                             map_files=ray_file_mapper())
        n, mb = rel.info["stats"]["triples"], rel.info["stats"]["pool_image_bytes_added"] / 1e6
    else:
        fmt = args.step.removeprefix("ray-")
        stats = export_release(open_release(args.releases, args.name), fmt, args.out, max_shard_rows=args.rows,
                               map_shards=ray_shard_mapper())
        n, mb = stats.triples, stats.bytes_written / 1e6
    seconds = time.perf_counter() - start
    ray.shutdown()
    return dict(step=args.step, cpus=args.cpus, triples=n, mb=mb, seconds=seconds)


def _dir_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _settled() -> None:
    """Write back and let the disk finish what earlier steps left (dirty pages, a removed export's freed blocks:
    this disk is mounted with `discard`), so a step is not charged for the one before it."""
    os.sync()
    time.sleep(1.0)


def run_publish(n: int, repeat: int, workdir: Path, tasks: int = 8, steps: tuple[str, ...] = STEPS) -> dict:
    from manifests.synthetic import write_synthetic_run
    from publish.release.create import create_release

    rows = max(8, n // tasks)  # run manifest files / export shards: tasks of a few seconds, work for every CPU
    run_dir, releases = workdir / "run", workdir / "releases"
    # identities=n: 2n distinct 256x256 synthetic faces-sized images (smooth noise PNGs), so the pool is not tiny
    write_synthetic_run(str(run_dir), identities=n, candidates_per_round=n, all_accepted=True,
                        ingest_rejects=0, commit_rows=rows, image_size=256)
    measured: list[dict] = []

    def cpu_order(k: int) -> tuple[int, int]:  # alternate, so that neither CPU count always runs first
        return (1, 2) if k % 2 == 0 else (2, 1)

    for k in range(repeat):
        for cpus in cpu_order(k) if "create" in steps else ():
            root = workdir / f"rel-{k}-{cpus}"
            _settled()
            measured.append(_run_child("--step", "ray-create", "--cpus", str(cpus), "--run", str(run_dir),
                                       "--releases", str(root), "--name", "r", "--rows", str(rows)))
            shutil.rmtree(root)
    first = create_release(str(run_dir), "first", str(releases), splits={"train": 1.0})
    pool_first = _dir_bytes(releases / "_pool")
    second = create_release(str(run_dir), "second", str(releases), splits={"train": 1.0})
    pool_second = _dir_bytes(releases / "_pool")
    pool = dict(triples=first.info["stats"]["triples"], images=first.info["stats"]["images"],
                image_bytes=first.info["stats"]["image_bytes"], pool_after_first=pool_first,
                pool_after_second=pool_second, second_added=second.info["stats"]["pool_image_bytes_added"],
                second_folder=_dir_bytes(Path(second.root)))
    for k in range(repeat):
        for fmt in (f for f in FORMATS if f in steps):
            for cpus in cpu_order(k):
                out = workdir / "out" / f"{fmt}-{cpus}-{k}"
                _settled()
                measured.append(_run_child("--step", f"ray-{fmt}", "--cpus", str(cpus), "--releases",
                                           str(releases), "--name", "first", "--out", str(out), "--rows", str(rows)))
                shutil.rmtree(out)
    return dict(n=n, rows=rows, tasks=-(-n // rows), repeat=repeat, measured=measured, pool=pool, steps=steps)


def publish_markdown(res: dict) -> str:
    lines = [PUBLISH_HEADING, "",
             f"- machine: {platform.machine()}, {cpu_name()}, {cores()} CPU cores shared with other jobs (load "
             f"average at the end {load_average(', ')}), files under {res['workdir']}; Python "
             f"{platform.python_version()}",
             f"- command: `python -m benchmarks.bench_export --publish {res['n']} --tasks {res['tasks']} "
             f"--repeat {res['repeat']}"
             + ("" if res["steps"] == STEPS else f" --steps {' '.join(res['steps'])}")
             + (f" --workdir {res['workdir']}" if res["workdir"] != tempfile.gettempdir() else "") + "`",
             f"- data: a synthetic run of {res['n']} accepted triples (real schemas; distinct 256x256 smooth-noise "
             f"PNGs, about 2 per triple), {res['rows']} triples per run manifest file and per export shard, "
             f"so {res['tasks']} tasks per step",
             "- each row: a fresh process starting a local Ray with that many CPUs, worker processes warmed up, "
             "then the step on Ray Data (pipeline/publish_on_ray.py); best and all of the repeats (1 and 2 CPUs "
             "in alternating order; `sync` before every step, so none pays for the previous one's writes)", "",
             "| step | 1 CPU: s (best) | 2 CPUs: s (best) | triples/s 1 CPU | triples/s 2 CPUs | speed-up "
             "| all runs (s) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    steps = list(dict.fromkeys(r["step"] for r in res["measured"]))
    for step in steps:
        by = {c: [r for r in res["measured"] if r["step"] == step and r["cpus"] == c] for c in (1, 2)}
        best = {c: min(r["seconds"] for r in by[c]) for c in (1, 2)}
        n = by[1][0]["triples"]
        runs = "; ".join(f"{c} CPU " + ", ".join(f"{r['seconds']:.1f}" for r in by[c]) for c in (1, 2))
        lines.append(f"| {step.removeprefix('ray-')} | {best[1]:.1f} | {best[2]:.1f} | {n / best[1]:.0f} | "
                     f"{n / best[2]:.0f} | {best[1] / best[2]:.2f}x | {runs} |")
    p = res["pool"]
    lines += ["", "Shared image pool (local `create_release`, two releases of the same run into one releases root):",
              "",
              f"- first release: {p['triples']} triples, {p['images']} distinct images, "
              f"{p['image_bytes'] / 1e6:.1f} MB of images; pool on disk {p['pool_after_first'][0]} files, "
              f"{p['pool_after_first'][1] / 1e6:.1f} MB",
              f"- second release of the same triples: pool on disk {p['pool_after_second'][0]} files, "
              f"{p['pool_after_second'][1] / 1e6:.1f} MB (+{(p['pool_after_second'][1] - p['pool_after_first'][1])} "
              f"bytes; the release's own count of new image bytes: {p['second_added']}); the second release folder "
              f"holds {p['second_folder'][0]} files, {p['second_folder'][1] / 1e3:.0f} KB (manifest, card, "
              "release.json, no image)", ""]
    return "\n".join(lines)


def _run_child(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_export", "--child", *argv], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode:
        raise RuntimeError(f"child {' '.join(argv[:4])} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(sizes: list[int], workdir: Path) -> list[dict]:
    from manifests.synthetic import write_synthetic_run

    pool = _pool()
    rows = []
    for n in sizes:
        run_dir, releases = workdir / f"run-{n}", workdir / "releases"
        write_synthetic_run(str(run_dir), identities=200, candidates_per_round=n, pool=pool, all_accepted=True,
                            ingest_rejects=0)
        name = f"bench-{n}"
        rows.append(dict(size=n, **_run_child("--step", "create", "--run", str(run_dir), "--releases",
                                             str(releases), "--name", name)))
        for fmt in FORMATS:
            out = workdir / "out" / f"{name}-{fmt}"
            rows.append(dict(size=n, **_run_child("--step", fmt, "--releases", str(releases), "--name", name,
                                                 "--out", str(out))))
            shutil.rmtree(out)  # keep the disk footprint to one export at a time
        shutil.rmtree(run_dir)
        shutil.rmtree(releases / name)
    return rows


def markdown(rows: list[dict], sizes: list[int]) -> str:
    import pyarrow

    lines = [HEADING, "",
             f"- machine: {platform.machine()}, {cpu_name()}, {cores()} CPU cores, local disk; Python "
             f"{platform.python_version()}, pyarrow {pyarrow.__version__}; load average at the end "
             f"{load_average(', ')}",
             f"- command: `python -m benchmarks.bench_export --sizes {' '.join(map(str, sizes))}`",
             "- data: synthetic releases (real schemas) whose 3 images per triple are 28 demo-corpus faces, "
             "256x256 PNG (~110 KB each), reused under new triple ids; the page cache holds them, so this is "
             "the exporters' own cost (PNG copy, JPEG re-encode for webdataset, Parquet/tar writing)",
             "- each row is a fresh process: RSS after imports, then the peak RSS (VmHWM, reset after imports) during "
             "the step; `create` is `create_release` from a synthetic run (200 identities, one split), which "
             "copies each distinct image once (~430 files here), so its MB column is the images copied", "",
             "| triples | step | seconds | triples/s | MB written | MB/s | RSS after imports (MB) | peak RSS (MB) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['triples']} | {r['step']} | {r['seconds']:.1f} | {r['triples'] / r['seconds']:.0f} | "
                     f"{r['mb']:.0f} | {r['mb'] / r['seconds']:.0f} | {r['base_rss_mb']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    growth = []
    for step in ("create", *FORMATS):
        peaks = [r["peak_rss_mb"] for r in rows if r["step"] == step]
        if len(peaks) > 1:
            growth.append(f"{step} {peaks[-1] - peaks[0]:+.0f} MB")
    lines += ["", f"Peak RSS from the smallest to the largest release ({sizes[0]} -> {sizes[-1]} triples, "
                  f"{sizes[-1] // sizes[0]}x): " + ", ".join(growth) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000], help="release sizes in triples")
    p.add_argument("--workdir", help="scratch folder (default: a temporary one, removed at the end)")
    p.add_argument("--append", help="add the markdown section to this file (e.g. benchmarks/RESULTS.md)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--releases", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--publish", type=int, metavar="N", help="measure the Ray Data publish path on N triples")
    p.add_argument("--repeat", type=int, default=2, help="repeats per --publish measurement")
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="--publish steps to measure")
    p.add_argument("--tasks", type=int, default=8, help="tasks (run manifest files, export shards) per --publish step")
    p.add_argument("--cpus", type=int, help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(publish_child(args) if args.step.startswith("ray-") else child(args)))
        return 0
    if args.publish:
        with tempfile.TemporaryDirectory(prefix="bench_publish_", dir=args.workdir) as tmp:
            res = run_publish(args.publish, args.repeat, Path(tmp), args.tasks, tuple(args.steps))
        res["workdir"] = args.workdir or tempfile.gettempdir()
        text = publish_markdown(res)
        print_section(text, PUBLISH_HEADING, args.append)
        return 0
    sizes = sorted(args.sizes)
    if args.workdir:
        rows = run(sizes, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
            rows = run(sizes, Path(tmp))
    text = markdown(rows, sizes)
    print_section(text, HEADING, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
