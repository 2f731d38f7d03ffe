"""The audit's reads and writes on a run: its decided candidates, and the labelled sample kept as the `audit` table
(one commit per sample: labelling the same sample again replaces it) and as run.json `audit`."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from core.location import Location
from manifests.query import connect, fetch_one
from manifests.runs import now_iso, read_run_info, write_run_info
from manifests.schemas import AUDIT
from manifests.store import ManifestStore
from qc.audit import AuditSample, audit_estimates, audit_rows


def decided_candidates(store: ManifestStore) -> tuple[int, list[dict]]:
    """(latest decision version, every candidate of it whose R image exists: candidate_id, accepted, r_path)."""
    con = connect(store)
    version = int(fetch_one(con, "select coalesce(max(coalesce(decision_version, 0)), 0) from qc")[0])
    cur = con.execute("""select q.candidate_id, q.accepted, c.reference_path as r_path
                         from qc q join candidates c using (candidate_id)
                         where c.reference_path is not null order by q.candidate_id""")
    cols = [d[0] for d in cur.description]
    return version, [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def labelled_artificial(store: ManifestStore) -> list[str]:
    """Candidate ids whose latest audit label (by labelled_at) is `artificial`: what a person threw away."""
    con = connect(store)
    rows = con.execute("""select candidate_id from (
                            select candidate_id, label, row_number() over (
                              partition by candidate_id order by labelled_at desc, label) as k from audit)
                          where k = 1 and label = 'artificial' order by candidate_id""").fetchall()
    return [r[0] for r in rows]


def sample_shard(sample: AuditSample) -> str:
    ids = "\0".join(sorted(r["candidate_id"] for r in sample.rows))
    key = hashlib.sha256(f"{sample.decision_version}\0{sample.seed}\0{ids}".encode()).hexdigest()[:16]
    return f"audit-{key}"


def record_audit(run: Location, sample: AuditSample, labels: dict[str, str], labelled_by: str) -> dict:
    """Commit the labelled sample as `audit` rows and write its estimates into run.json `audit` (by shard)."""
    info = read_run_info(run)
    if info.get("run_id") not in (None, sample.run_id):
        raise ValueError(f"this audit sample was drawn from run {sample.run_id}, not {info.get('run_id')}")
    store = ManifestStore.open(run)
    shard = sample_shard(sample)
    rows = audit_rows(sample, labels, labelled_by, now_iso())
    store.commit(shard, {"audit": pa.Table.from_pylist(rows, schema=AUDIT)}, {"phase": "audit"})
    est = dict(audit_estimates(sample, labels), labelled_by=labelled_by, shard=shard)
    info["audit"] = {**info.get("audit", {}), shard: est}
    write_run_info(run, info)
    return est
