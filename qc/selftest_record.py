"""Run the QC self-test on a run's committed sources and keep it: the `qc_selftest` table and the validity card."""

from __future__ import annotations

import logging

import pyarrow as pa

from manifests.schemas import QC_SELFTEST
from manifests.store import ManifestStore
from qc.config import QCConfig
from qc.run_thresholds import RUN_THRESHOLD_COLUMNS, resolve_run_thresholds
from qc.selftest import run_selftest, selftest_rows

log = logging.getLogger(__name__)


def record_selftest(qc: QCConfig, store: ManifestStore, run_id: str, seed: int) -> dict | None:
    """Self-test the run's QC on its sources, commit the `qc_selftest` rows (one shard, the same on every
    invocation: the test is deterministic in the sources) and return the validity card for run.json; None when
    the expression check is not calibrated (qc.expression.calibrate false, or no source to calibrate on)."""
    if not qc.expression.calibrate:
        return None
    sources = store.read_table("sources", list(RUN_THRESHOLD_COLUMNS))
    resolved = resolve_run_thresholds(qc, sources)
    if resolved.expression is None:
        log.warning("QC self-test: no source has an expression label and the expression net's output; the "
                     "calibrated expression check is off for this run")
        return None
    test = run_selftest(qc, sources, resolved.thresholds, seed)
    rows = selftest_rows(test, run_id)
    store.commit("qc-selftest", {"qc_selftest": pa.Table.from_pylist(rows, schema=QC_SELFTEST)},
                 {"phase": "selftest"})
    card = test.card()
    for c in card["expression"]["classes"]:
        log.info("QC self-test, T %s: %s, right-expression R pass %s, wrong %s (n %d/%d)", c["class"],
                 "judged" if c["judged"] else f"UNJUDGEABLE ({c['why_not']})", _pct(c["right_pass"]),
                 _pct(c["wrong_pass"]), c["n_right"], c["n_wrong"])
    return card


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def unplanned_expressions(qc: QCConfig, run_info: dict | None) -> frozenset[str]:
    """Expression classes whose targets are not planned: those the run's self-test (run.json) named unjudgeable,
    unless qc.expression.judge_unjudgeable."""
    card = (run_info or {}).get("selftest") or {}
    if qc.expression.judge_unjudgeable or not qc.expression.calibrate:
        return frozenset()
    return frozenset(card.get("expression", {}).get("unjudgeable", []))
