"""The end-of-run summary: counts per stage, accepted triples, reasons, timing — read from the manifests."""

from __future__ import annotations

from manifests.query import NAMED_QUERIES, connect, fetch_one
from manifests.schemas import QC_SCORES
from manifests.store import ManifestStore


def summarize(store: ManifestStore) -> dict:
    con = connect(store)
    sources = fetch_one(con, "select count(*) from sources")[0]
    ingest_rejects = dict(con.execute(
        "select reason, count(*) from rejects where stage = 'ingest' group by 1 order by 2 desc").fetchall())
    rounds = []
    for (r,) in con.execute("select distinct round from qc order by 1").fetchall():
        total = fetch_one(con, "select count(*) from qc where round = ?", [r])[0]
        failed_at = dict(con.execute(
            "select reject_stage, count(*) from candidates where round = ? and status = 'rejected' group by 1",
            [r]).fetchall())
        et_out = total - failed_at.get("expression_transfer", 0)
        sw_out = et_out - failed_at.get("identity_swap", 0)
        accepted = fetch_one(con, "select count(*) from qc where round = ? and accepted", [r])[0]
        reasons = dict(con.execute("select reason, count(*) from qc where round = ? group by 1 order by 2 desc",
                                   [r]).fetchall())
        medians = {}
        for acc, label in ((True, "accepted"), (False, "rejected")):
            row = fetch_one(con,
                f"select {', '.join(f'median({c})' for c in QC_SCORES)} from qc "
                "where round = ? and accepted = ? and face_found", [r, acc])
            medians[label] = dict(zip(QC_SCORES,
                                      [None if v is None else round(float(v), 4) for v in row], strict=False))
        pairing = dict(con.execute(
            "select reason, count(*) from rejects where stage = 'pairing' and round = ? group by 1", [r]).fetchall())
        rounds.append(dict(
            round=r, planned=total, pairing_refused=pairing,
            stages={"expression_transfer": {"in": total, "out": et_out},
                    "identity_swap": {"in": et_out, "out": sw_out},
                    "qc": {"in": total, "out": accepted}},
            accepted=accepted, reasons=reasons, median_scores=medians))
    triples = fetch_one(con, "select count(*) from triples")[0]
    # items whose worker died every time they ran alone (pipeline/isolate.py), by the stage they crashed in
    crashed = dict(con.execute("select stage, count(*) from rejects where reason = 'worker_crashed' group by 1 "
                               "order by 1").fetchall())
    selftest = [dict(zip(("expression", "judged", "right_pass", "wrong_pass", "n_right", "n_wrong"), row,
                         strict=True)) for row in con.execute(
        "select expression, judged, right_pass, wrong_pass, n_right, n_wrong from (" + NAMED_QUERIES["qc-selftest"]
        + ")").fetchall()]
    return dict(sources=sources, ingest_rejects=ingest_rejects, rounds=rounds, triples=triples,
                worker_crashed=crashed, selftest=selftest)


def format_summary(summary: dict, timing: dict) -> str:
    lines = [f"run {timing['run_id']}  ->  {timing['run_url']}",
             f"ingest: {summary['sources']} sources, rejected {summary['ingest_rejects'] or 0}"]
    if summary.get("selftest"):
        target = summary.get("selftest_max_false_pass")
        lines.append("QC self-test on the corpus's real photos (pass rate of R with T's expression / another one"
                     + (f", the other one at most {target:.0%}: qc.expression.max_false_pass" if target else "")
                     + "; `ciep query qc-selftest`):")
        for c in summary["selftest"]:
            lines.append(f"  T {c['expression']:<12} " + (
                f"{_pct(c['right_pass'])} / {_pct(c['wrong_pass'])}  (n {c['n_right']}/{c['n_wrong']})"
                if c["judged"] else "UNJUDGEABLE on this corpus: its targets are not planned"))
    for r in summary["rounds"]:
        lines.append(f"round {r['round']}: {r['planned']} candidates planned"
                     + (f", pairing refused {r['pairing_refused']}" if r["pairing_refused"] else ""))
        for stage, c in r["stages"].items():
            lines.append(f"  {stage:<20} in {c['in']:>6}  out {c['out']:>6}")
        lines.append(f"  accepted triples: {r['accepted']} / {r['planned']}"
                     f" ({(r['accepted'] / r['planned'] if r['planned'] else 0):.1%})")
        lines.append("  reasons: " + ", ".join(f"{k}={v}" for k, v in r["reasons"].items()))
        for label, m in r["median_scores"].items():
            lines.append(f"  median scores ({label}): " + ", ".join(f"{k}={v}" for k, v in m.items()))
    lines.append(f"triples in the run: {summary['triples']}")
    if summary.get("worker_crashed"):
        lines.append("killed their worker on every attempt (rejected as worker_crashed): "
                     + ", ".join(f"{k}: {v}" for k, v in summary["worker_crashed"].items()))
    if summary.get("pending_retries"):
        lines.append("left to retry (transient errors; rerun): "
                     + ", ".join(f"{k}: {v}" for k, v in summary["pending_retries"].items()))
    lines.append(f"wall time {timing['wall_s']:.1f}s; this invocation processed {timing['items']} items "
                 f"({timing['items'] / max(timing['wall_s'], 1e-9):.2f} items/s end to end)")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"
