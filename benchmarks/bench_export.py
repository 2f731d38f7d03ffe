"""Release export throughput and peak memory for releases of growing size: memory must stay flat.

Releases are synthetic (manifests/synthetic.py) with the real schemas: a pool of real face images (the demo
corpus, centre-cropped to 256x256 PNG like the aligned crops) reused under new triple ids, so a release of
N triples holds N manifest rows and every export reads and writes 3 N images. Each step (release create,
then each export format) runs in a fresh child process; its peak RSS (VmHWM) is reported together with
the RSS after imports (VmHWM is reset after imports), so the difference is what the step itself held.

    python benchmarks/bench_export.py [--sizes 500 2000 8000] [--append benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import replace_section

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HEADING = "## Exports"
FORMATS = ("hf-parquet", "webdataset", "imagefolder")


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
    for path in sorted((REPO / "data" / "demo_corpus").glob("*/*.jpg")):
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
    from publish.release import create_release, open_release

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


def _run_child(*argv: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *argv], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
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


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def markdown(rows: list[dict], sizes: list[int]) -> str:
    import pyarrow

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [HEADING, "",
             f"- machine: {platform.machine()}, {cpu}, {_cores()} CPU cores, local disk; Python "
             f"{platform.python_version()}, pyarrow {pyarrow.__version__}; load average at the end {load}",
             f"- command: `python benchmarks/bench_export.py --sizes {' '.join(map(str, sizes))}`",
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
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    sizes = sorted(args.sizes)
    if args.workdir:
        rows = run(sizes, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
            rows = run(sizes, Path(tmp))
    text = markdown(rows, sizes)
    sys.stdout.write(text)
    if args.append:
        replace_section(Path(args.append), HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
