"""`ciep audit sample --out DIR` and `ciep audit record DIR`: a labelled audit of a run's generated R (qc/audit.py).

`sample` draws a blind stratified sample of the run's latest QC decision and writes, under DIR, `audit_sheet.png`
(each R's lower face, numbered), `audit.csv` (one row per R: fill in `label` with artificial, fine or skip) and
`audit_sample.json` (the draw: run, decision version, seed, strata). `record` checks the labels against the sample,
commits them as the run's `audit` table and prints the estimates, which also go into run.json `audit`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json

from core.location import Location
from manifests.runs import find_run, read_run_info
from manifests.store import ManifestStore
from pipeline.exits import UsageError
from publish.audit_sheet import audit_sheet_png
from publish.report import file_reader
from qc.audit import AuditSample, draw_sample, format_estimates, read_labels
from qc.audit_record import decided_candidates, record_audit

SAMPLE_JSON, LABELS_CSV, SHEET_PNG = "audit_sample.json", "audit.csv", "audit_sheet.png"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ciep audit", description="A labelled audit of a run's generated R: a blind "
                                "random sample to label by eye, and what the labels say of QC's accept decision.")
    p.add_argument("action", choices=["sample", "record"])
    p.add_argument("folder", nargs="?", help="record: the folder `sample` wrote (with audit.csv filled in)")
    p.add_argument("--out", help="sample: folder or URL to write the sheet, audit.csv and audit_sample.json to")
    p.add_argument("--accepted", type=int, default=30, help="sample: accepted R to draw (default 30)")
    p.add_argument("--rejected", type=int, default=20, help="sample: rejected R to draw (default 20)")
    p.add_argument("--seed", type=int, default=0, help="sample: the draw's seed (default 0)")
    p.add_argument("--by", default="", help="record: who labelled (kept with the rows)")
    p.add_argument("--run", help="run id (default: the most recently updated run)")
    p.add_argument("--config", help="config whose run.output_root is searched (default configs/demo.yaml)")
    p.add_argument("--output-root", help="folder or URL holding runs (overrides the config)")
    return p


def sample(args: argparse.Namespace, output_root: Location) -> int:
    if not args.out:
        raise UsageError("ciep audit sample needs --out FOLDER")
    if args.accepted < 0 or args.rejected < 0 or args.accepted + args.rejected == 0:
        raise UsageError("--accepted and --rejected must be >= 0 and not both 0")
    run = find_run(output_root, args.run)
    version, decided = decided_candidates(ManifestStore.open(run))
    if not decided:
        raise UsageError(f"run {run.name} has no QC decision with an R image to audit")
    run_id = str(read_run_info(run).get("run_id") or run.name)
    s = draw_sample(decided, {"accepted": args.accepted, "rejected": args.rejected}, args.seed, run_id, version,
                    run.name)
    if not s.rows:
        raise UsageError(f"run {run_id} has no {'accepted' if args.accepted else 'rejected'} R to draw "
                         f"({s.population['accepted']} accepted, {s.population['rejected']} rejected)")
    out = run.at(args.out)
    out.fs.makedirs(out.path, exist_ok=True)
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["index", "candidate_id", "label", "note"])
    w.writerows([r["index"], r["candidate_id"], "", ""] for r in s.rows)
    for name, data in ((SAMPLE_JSON, s.to_json().encode()), (LABELS_CSV, text.getvalue().encode()),
                       (SHEET_PNG, audit_sheet_png(s.rows, file_reader(run)))):
        with out.open(name, mode="wb") as fh:
            fh.write(data)
    drawn = {k: sum(r["stratum"] == k for r in s.rows) for k in s.population}
    print(f"audit sample of run {run_id} (decision version {version}, seed {args.seed}): {len(s.rows)} R "
          f"({drawn['accepted']} of {s.population['accepted']} accepted, {drawn['rejected']} of "
          f"{s.population['rejected']} rejected, shown mixed) in {out.url}: label each row of {LABELS_CSV} "
          f"artificial / fine / skip from {SHEET_PNG}, then `ciep audit record {out.url}`")
    return 0


def record(args: argparse.Namespace, output_root: Location) -> int:
    if not args.folder:
        raise UsageError("ciep audit record needs the folder that `ciep audit sample` wrote")
    where = output_root.at(args.folder)
    for name in (SAMPLE_JSON, LABELS_CSV):
        if not where.exists(name):
            raise UsageError(f"{where.url} has no {name}: give the folder `ciep audit sample --out` wrote")
    try:
        s = AuditSample.from_json(where.read_bytes(SAMPLE_JSON).decode())
        labels = read_labels(csv.DictReader(io.StringIO(where.read_bytes(LABELS_CSV).decode())), s)
    except (ValueError, json.JSONDecodeError) as err:
        raise UsageError(str(err)) from None
    run = find_run(output_root, args.run or s.run_folder or s.run_id)
    try:
        est = record_audit(run, s, labels, args.by)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"audit of run {s.run_id} recorded ({est['shard']}; `ciep query audit`):\n{format_estimates(est)}")
    return 0


def run_audit(args: argparse.Namespace, output_root: Location) -> int:
    return sample(args, output_root) if args.action == "sample" else record(args, output_root)
