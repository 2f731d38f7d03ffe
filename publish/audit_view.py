"""run.json `audit` (qc/audit.py, `ciep audit record`) as one table for the report: a row per labelled sample."""

from __future__ import annotations

from qc.audit import format_share

COLUMNS = ["sample", "decision version", "labelled by", "accepted R artificial", "rejected R artificial",
           "artificial R rejected by QC", "fine R rejected by QC"]


def _share(d: dict | None) -> str:
    return format_share(d, "–")


def _stratum(p: dict) -> str:
    share = p.get("artificial_share") or {}
    return _share(share) + (f" ({p.get('artificial', 0)} of {share['n']})" if share.get("value") is not None else "")


def audit_table(audits: object) -> list[list[str]] | None:
    """One row per recorded audit sample, its shares with 95 % intervals; None without an audit."""
    if not isinstance(audits, dict) or not audits:
        return None
    rows = []
    for shard, est in sorted(audits.items()):
        strata = est.get("strata", {})
        rows.append([shard, str(est.get("decision_version", "–")), est.get("labelled_by") or "–",
                     _stratum(strata.get("accepted", {})), _stratum(strata.get("rejected", {})),
                     _share(est.get("artificial_rejected")), _share(est.get("fine_rejected"))])
    return rows
