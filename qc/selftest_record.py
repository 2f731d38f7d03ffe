"""Run the QC self-test on a run's committed sources and keep it: the `qc_selftest` table and the validity card."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from manifests.schemas import QC_SELFTEST
from manifests.store import ManifestStore
from qc.config import QCConfig
from qc.identity_selftest import identity_selftest
from qc.run_thresholds import RUN_THRESHOLD_COLUMNS, RunThresholds, resolve_for_store
from qc.selftest import run_selftest, selftest_rows, wilson_interval

log = logging.getLogger(__name__)


def record_selftest(qc: QCConfig, store: ManifestStore, run_id: str, seed: int,
                    same_person_similarity: float | None = None, resolved: RunThresholds | None = None) -> dict | None:
    """Self-test the run's QC on its sources, commit the `qc_selftest` rows (one shard, the same on every
    invocation: the test is deterministic in the sources) and return the validity card for run.json; None when
    the expression check is not calibrated (qc.expression.calibrate false, or no source to calibrate on)."""
    if not qc.expression.calibrate:
        return None
    sources = store.read_table("sources", list(RUN_THRESHOLD_COLUMNS))
    resolved = resolved or resolve_for_store(qc, store)  # the driver passes the thresholds it already resolved
    if resolved.expression is None:
        log.warning("QC self-test: no source has an expression label and the expression net's output; the "
                     "calibrated expression check is off for this run")
        return None
    test = run_selftest(qc, sources, resolved.thresholds, seed)
    ident = identity_selftest(sources.column("identity").to_pylist(),
                              np.asarray(sources.column("embedding").to_pylist(), np.float64), resolved.thresholds,
                              same_person_similarity, max_false_reject=qc.identity.margin_max_false_reject, seed=seed)
    rows = selftest_rows(test, run_id) + mouth_rows(resolved.mouth_record(), run_id) + identity_rows(ident, run_id)
    store.commit("qc-selftest", {"qc_selftest": pa.Table.from_pylist(rows, schema=QC_SELFTEST)},
                 {"phase": "selftest"})
    card = test.card()
    card["mouth"] = mouth_card(resolved.mouth_record())
    card["identity"] = ident
    for c in card["expression"]["classes"]:
        log.info("QC self-test, T %s: %s, right-expression R pass %s, wrong %s (n %d/%d)", c["class"],
                 "judged" if c["judged"] else f"UNJUDGEABLE ({c['why_not']})", _pct(c["right_pass"]),
                 _pct(c["wrong_pass"]), c["n_right"], c["n_wrong"])
    return card


def mouth_card(record: dict | None) -> dict | None:
    """The mouth checks' flag rates on the run's real mouths, leave-one-identity-out (qc/mouth_calibration.py):
    a real mouth should almost never be flagged."""
    if not record:
        return None
    rates = record.get("flag_rate_leave_one_identity_out")
    return dict(source=record.get("source"), target=record.get("target"), mouths=record.get("mouths"),
                flag_rate_out_of_sample=rates, note=record.get("note"))


def mouth_rows(record: dict | None, run_id: str) -> list[dict]:
    """qc_selftest rows of the mouth checks: flag rate on real mouths (all, open, closed) per check and any."""
    rates = (record or {}).get("flag_rate_leave_one_identity_out") or {}
    out = []
    for group, row in rates.items():
        n = int(row.get("mouths", 0))
        for check, value in row.items():
            if check == "mouths":
                continue
            lo, hi = wilson_interval(round(float(value) * n), n)
            out.append(dict(run_id=run_id, check="mouth", label=group, measure=f"flag_rate:{check}",
                            value=float(value), ci_low=lo, ci_high=hi, n=n, judged=True,
                            threshold=record.get("target") if check == "any" else None,  # type: ignore[union-attr]
                            note="real mouths flagged, leave-one-identity-out", calibration_sha256=None))
    return out


def identity_rows(figures: dict, run_id: str) -> list[dict]:
    """qc_selftest rows of the identity checks on real photos of j (qc/identity_selftest.py) and the merges."""
    n = int(figures.get("photos") or 0)
    out = []
    for measure in ("identity_false_reject_rate", "margin_false_reject_rate", "held_out_margin_false_reject_rate"):
        value = figures.get(measure)
        if value is None:
            continue
        lo, hi = wilson_interval(round(float(value) * n), n)
        out.append(dict(run_id=run_id, check="identity", label=None, measure=measure, value=float(value), ci_low=lo,
                        ci_high=hi, n=n, judged=True, threshold=None, note="real photos of j rejected",
                        calibration_sha256=None))
    out.append(dict(run_id=run_id, check="identity", label=None, measure="identities_merged",
                    value=float(figures.get("identities_merged") or 0), ci_low=None, ci_high=None,
                    n=int(figures.get("merged_groups") or 0), judged=True, threshold=None,
                    note="identities in a merged group (n: groups)", calibration_sha256=None))
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def unplanned_expressions(qc: QCConfig, run_info: dict | None) -> frozenset[str]:
    """Expression classes whose targets are not planned: those the run's self-test (run.json) named unjudgeable,
    unless qc.expression.judge_unjudgeable."""
    card = (run_info or {}).get("selftest") or {}
    if qc.expression.judge_unjudgeable or not qc.expression.calibrate:
        return frozenset()
    return frozenset(card.get("expression", {}).get("unjudgeable", []))
