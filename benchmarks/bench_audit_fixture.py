"""The hand-labelled R of a labelled-R fixture (default tests/fixtures/r_mouths_v4) read as an audit (qc/audit.py) of
the London round they came from: its first 50 candidate ids (hashes, so a uniform sample of the round), stratified by
that round's current QC decision and weighed back to the run, as `ciep audit record` does. Run the round first (same
run id as the fixture's; r_mouths_v3's round, demo-c146cb51f0, was made by landmark_warp_v3 and today's planner gives
other candidate ids):

    python pipeline/run_idi.py --set corpus.root=data/faces/london --set pairing.max_targets_per_identity=1 \\
        --set run.output_root=/tmp/lr/runs
    python -m benchmarks.bench_audit_fixture --run /tmp/lr/runs/demo-deda0ffac7
"""

from __future__ import annotations

import argparse
import json

from benchmarks.common import REPO, machine
from manifests.runs import read_run_info
from manifests.store import ManifestStore
from qc.audit import AuditSample, audit_estimates, format_estimates
from qc.audit_record import decided_candidates

FIXTURES = REPO / "tests" / "fixtures"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="folder of the London round the fixture's R came from")
    p.add_argument("--fixture", default="r_mouths_v4", help="folder under tests/fixtures")
    args = p.parse_args(argv)
    fixture = json.loads((FIXTURES / args.fixture / "labels.json").read_text())
    mouths = fixture["mouths"]
    run_id = read_run_info(args.run).get("run_id")
    if run_id is None or run_id not in fixture["source"]:
        raise SystemExit(f"{args.run} is not the fixture's round (run {run_id}; the fixture names its run id)")
    version, decided = decided_candidates(ManifestStore.open(args.run))
    accepted = {d["candidate_id"]: bool(d["accepted"]) for d in decided}
    missing = [m["candidate_id"] for m in mouths if m["candidate_id"] not in accepted]
    if missing:
        raise SystemExit(f"{len(missing)} fixture candidates have no decision in {args.run}")
    rows = [dict(index=m["index"], candidate_id=m["candidate_id"], r_path="",
                 stratum="accepted" if accepted[m["candidate_id"]] else "rejected") for m in mouths]
    population = {"accepted": sum(accepted.values()), "rejected": len(accepted) - sum(accepted.values())}
    sample = AuditSample(str(run_id), version, 0, population, rows)
    print(f"{machine()}; run {run_id}, decision version {version}, {len(accepted)} candidates with R")
    print(format_estimates(audit_estimates(sample, {m["candidate_id"]: m["label"] for m in mouths})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
