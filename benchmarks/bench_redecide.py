"""Re-deciding stored QC candidates with a changed threshold (qc/redecide.py), no image read or written.

    python -m benchmarks.bench_redecide --candidates 10000 [--write-results]

Writes a synthetic run (manifests/synthetic.py: real manifest schemas and image files) with N candidates,
re-decides it twice (the run's own rule, then a stricter expression threshold) and times each re-decision;
checks that no image file changed (mtimes) and that the views show the latest decision. Target: < 10 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, machine, replace_section
from manifests.query import connect
from manifests.store import ManifestStore
from manifests.synthetic import THRESHOLDS, write_synthetic_run
from pipeline.config import load_config
from qc.redecide import redecide

RULE = [f"qc.identity.max_leak_similarity={THRESHOLDS['max_leak_similarity']}",
        f"qc.identity.min_swap_similarity={THRESHOLDS['min_swap_similarity']}",
        f"qc.expression.max_distance={THRESHOLDS['max_expression_distance']}",
        f"qc.quality.min_sharpness={THRESHOLDS['min_sharpness']}", "qc.identity.min_margin=0"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"{tmp}/run"
        t0 = time.monotonic()
        write_synthetic_run(url, identities=200, candidates_per_round=args.candidates, seed=5)
        made = time.monotonic() - t0
        images = [p for p in Path(url, "images").rglob("*") if p.is_file()]
        stamps = {p: os.stat(p).st_mtime_ns for p in images}
        store = ManifestStore.open(url)
        same = redecide(store, load_config(overrides=RULE).qc)
        strict = redecide(store, load_config(overrides=[*RULE, "qc.expression.max_distance=0.06"]).qc)
        untouched = {p: os.stat(p).st_mtime_ns for p in images} == stamps
        con = connect(store)
        latest = con.execute("select count(*), count(*) filter (where accepted) from qc").fetchall()[0]
        triples = con.execute("select count(*) from triples").fetchall()[0][0]
    assert same.changed == 0 and untouched and latest == (args.candidates, strict.accepted) \
        and triples == strict.accepted
    load = os.getloadavg()[0]
    text = (f"## Re-deciding QC without regenerating\n\n"
            f"`python -m benchmarks.bench_redecide --candidates {args.candidates}` — synthetic run "
            f"(manifests/synthetic.py, {args.candidates} candidates, written in {made:.1f} s), re-decided by "
            f"`qc.redecide.redecide` (read the latest qc rows, apply qc/decide.py, write one qc + triples shard "
            f"with decision_version n+1).\n\n"
            f"- machine: {machine()}; load average {load:.1f} (shared machine)\n\n"
            f"| re-decision | candidates | accepted | changed | seconds |\n|---|---:|---:|---:|---:|\n"
            f"| v1: the run's own thresholds | {same.candidates} | {same.accepted} | {same.changed} | "
            f"{same.seconds:.2f} |\n"
            f"| v2: qc.expression.max_distance 0.12 -> 0.06 | {strict.candidates} | {strict.accepted} | "
            f"{strict.changed} | {strict.seconds:.2f} |\n\n"
            f"No image file changed (mtimes of all {len(images)} compared); the `qc`/`triples` views show v2 "
            f"({latest[1]} accepted, {triples} triples), `qc_all`/`triples_all` keep v0-v2. Target < 10 s: "
            f"{'met' if max(same.seconds, strict.seconds) < 10 else 'NOT met'}.\n")
    print(text)
    if args.write_results:
        replace_section(RESULTS, "## Re-deciding QC without regenerating", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
