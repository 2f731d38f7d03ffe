"""Re-decide a run's QC from stored scores, as a new decision version: no image is read or written.

`ciep qc redecide --run ID [--config C] --set qc.expression.max_prob_distance=0.4 ...` applies the config's QC
thresholds (identity thresholds left null are calibrated from the run's sources, as the QC stage does) to the
scores of the latest decision of every candidate, and commits one shard: `qc` rows and `triples` rows with
decision_version n+1. Old versions stay in `qc_all` / `triples_all`; the `qc` and `triples` views (ciep query,
reports, summaries) and releases show the latest. `pipeline/run_idi.py` calls it when a rerun's thresholds
differ from the latest decision's, so changing a threshold never regenerates an image.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.location import Location
from manifests.runs import now_iso, read_run_info, write_run_info
from manifests.schemas import QC, TRIPLE_SCORES, TRIPLES
from manifests.store import ManifestStore, shard_key
from manifests.tables import triples_table
from qc.config import QCConfig
from qc.decide import ACCEPTED, SCORE_COLUMNS, Scores, failed_checks
from qc.run_thresholds import resolve_for_store

log = logging.getLogger(__name__)


@dataclass
class RedecideResult:
    version: int
    candidates: int
    accepted: int
    changed: int  # candidates whose accepted flag changed
    seconds: float
    thresholds: str


def current_version(store: ManifestStore) -> int:
    """The latest decision version of the run (0 before any re-decision)."""
    v = store.read_table("qc", ["decision_version"]).column("decision_version")
    m = pc.max(v).as_py() if len(v) else None
    return int(m or 0)


def latest_decisions(store: ManifestStore) -> pa.Table:
    qc = store.read_table("qc")
    version = pc.fill_null(qc["decision_version"], 0)
    return qc.filter(pc.equal(version, pc.max(version))) if qc.num_rows else qc


def _scores(row: dict) -> Scores:
    return Scores(**{n: row[n] for n in SCORE_COLUMNS})


def _triples(store: ManifestStore, qc: pa.Table) -> pa.Table:
    """TRIPLES rows of the accepted `qc` rows, from the candidates and sources tables (no image touched)."""
    cands = store.read_table("candidates")
    cidx = {c: k for k, c in enumerate(cands.column("candidate_id").to_pylist())}
    src = store.read_table("sources", ["source_id", "aligned_path", "aligned_sha256", "embedding"])
    sidx = {s: k for k, s in enumerate(src.column("source_id").to_pylist())}
    c = cands.take(pa.array([cidx[x] for x in qc.column("candidate_id").to_pylist()], pa.int64()))
    s = src.take(pa.array([sidx[x] for x in c.column("s_source_id").to_pylist()], pa.int64()))
    t = src.take(pa.array([sidx[x] for x in c.column("target_source_id").to_pylist()], pa.int64()))
    # the generation rows again: the candidate's columns, S's and T's aligned images, the new decision
    rows = {name: c[name] for name in c.column_names}
    rows.update({f"s_{name}": s[name] for name in ("aligned_path", "aligned_sha256", "embedding")})
    rows.update({f"t_{name}": t[name] for name in ("aligned_path", "aligned_sha256")})
    rows.update({name: qc[name] for name in (*TRIPLE_SCORES, "identity_model", "identity_model_sha256", "thresholds",
                                             "run_id", "decision_version")})
    return triples_table(pa.table(rows))


def redecide(store: ManifestStore, qc_cfg: QCConfig, run: Location | None = None) -> RedecideResult:
    """Decide every candidate again with qc_cfg's thresholds; commits decision version n+1 (noted in run.json)."""
    started = time.monotonic()
    latest = latest_decisions(store)
    version = current_version(store) + 1
    resolved = resolve_for_store(qc_cfg, store)
    thresholds, cal, mouths = resolved.thresholds, resolved.identity, resolved.mouth
    tj = thresholds.to_json()
    accepted, reason, reasons = [], [], []
    changed = 0
    for row in latest.select(["accepted", "reason", "reasons", *SCORE_COLUMNS]).to_pylist():
        if row["face_found"] is None:  # rejected before QC could score it: that decision stands
            a, rs = False, list(row["reasons"] or [row["reason"]])
        else:
            rs = failed_checks(_scores(row), thresholds)
            a = not rs
        changed += a != row["accepted"]
        accepted.append(a)
        reasons.append(rs)
        reason.append(rs[0] if rs else ACCEPTED)
    n = latest.num_rows
    new = latest.set_column(latest.schema.get_field_index("accepted"), "accepted", pa.array(accepted, pa.bool_()))
    for name, values, typ in (("reason", reason, pa.string()), ("reasons", reasons, pa.list_(pa.string())),
                              ("thresholds", [tj] * n, pa.string()),
                              ("decision_version", [version] * n, pa.int32())):
        new = new.set_column(new.schema.get_field_index(name), name, pa.array(values, typ))
    acc = new.filter(new["accepted"]) if n else new
    triples = _triples(store, acc) if acc.num_rows else TRIPLES.empty_table()
    store.commit(shard_key(new.column("candidate_id").to_pylist() or ["empty"], f"redecide-v{version}-"),
                 {"qc": new.select([f.name for f in QC]), "triples": triples},
                 {"phase": "redecide", "decision_version": version})
    result = RedecideResult(version, n, int(np.sum(accepted)) if n else 0, changed, time.monotonic() - started, tj)
    if run is not None:
        info = read_run_info(run)
        if info:
            info.setdefault("decisions", []).append(dict(
                decision_version=version, at=now_iso(), thresholds=json.loads(tj),
                identity_calibration=cal.to_dict() if cal else None,
                mouth_calibration=mouths.record if mouths else None, candidates=n, accepted=result.accepted,
                changed=changed))
            info["updated_at"] = now_iso()
            write_run_info(run, info)
    log.info("redecide: version %d, %d candidates, %d accepted, %d changed, %.2f s", version, n, result.accepted,
             changed, result.seconds)
    return result


def thresholds_differ(store: ManifestStore, qc_cfg: QCConfig) -> bool:
    """Whether the latest decisions were made with other thresholds than qc_cfg's (calibrated as QC would)."""
    latest = latest_decisions(store)
    if not latest.num_rows:
        return False
    thresholds = resolve_for_store(qc_cfg, store).thresholds
    want = json.loads(thresholds.to_json())
    seen = {t for t in latest.column("thresholds").to_pylist() if t}
    return any(json.loads(t) != want for t in seen)
