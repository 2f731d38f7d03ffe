"""The run's QC self-test (qc/selftest.py, qc/selftest_record.py): real pseudo-triples of London judged by QC's
code, kept as the qc_selftest table, the named query and the validity card; unjudgeable classes not planned."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from manifests.query import connect, run_query
from manifests.schemas import SOURCES
from manifests.store import ManifestStore
from pipeline.config import load_config
from pipeline.planning.stream import plan_round
from qc.config import QCConfig
from qc.run_thresholds import resolve_run_thresholds
from qc.selftest import run_selftest, wilson_interval
from qc.selftest_record import record_selftest, unplanned_expressions
from tests.hardening.test_plan_round_fast import synthetic_sources


def sources_table(ident, labels, probs, desc) -> pa.Table:
    """A `sources` table of the London photos with the columns the self-test reads (others null or dummies)."""
    n = len(ident)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, 128))
    cols = dict(source_id=[f"s{k}" for k in range(n)], input_key=[f"{i}/{k}" for k, i in enumerate(ident)],
                identity=list(ident), expression=list(labels), path=[f"/c/{k}" for k in range(n)],
                file_sha256=[f"{k:064x}" for k in range(n)], aligned_path=[f"/a/{k}" for k in range(n)],
                aligned_sha256=[f"{k:064x}" for k in range(n)], expression_probs=probs.tolist(),
                expression_descriptor=desc.tolist(), embedding=(emb / np.linalg.norm(emb, axis=1)[:, None]).tolist())
    return pa.table({f.name: pa.array(cols.get(f.name, [None] * n), f.type) for f in SOURCES}, schema=SOURCES)


def test_selftest_on_london_promises_both_classes(london_features):
    sources = sources_table(*london_features)
    qc = QCConfig()
    test = run_selftest(qc, sources, resolve_run_thresholds(qc, sources).thresholds)
    assert [c["class"] for c in test.classes] == ["neutral", "smiling"]
    for c in test.classes:
        assert c["judged"] and c["n_right"] == 102 and c["n_wrong"] == 102
        assert c["wrong_pass"] <= 0.05 and c["right_pass"] >= 0.5 and c["auc"] > 0.9
        lo, hi = c["right_pass_ci"]
        assert lo <= c["right_pass"] <= hi
    card = test.card()
    assert card["expression"]["judged"] == ["neutral", "smiling"] and card["expression"]["unjudgeable"] == []


def test_selftest_is_kept_as_a_table_a_named_query_and_a_card(tmp_path, london_features):
    store = ManifestStore.open(str(tmp_path / "run"))
    ident, labels, probs, desc = london_features
    labels = labels.copy()
    labels[:8] = "surprised"  # too few to certify: named unjudgeable, not planned
    store.commit("sources-0", {"sources": sources_table(ident, labels, probs, desc)})
    qc = QCConfig()
    card = record_selftest(qc, store, "run-x", seed=1)
    assert card is not None and card["expression"]["unjudgeable"] == ["surprised"]
    assert record_selftest(qc, store, "run-x", seed=1) == card  # deterministic: a rerun commits the same shard
    cols, rows = run_query(connect(store), "qc-selftest")
    by_class = {r[0]: dict(zip(cols, r, strict=True)) for r in rows}
    assert set(by_class) == {"neutral", "smiling", "surprised"}
    assert by_class["surprised"]["judged"] is False and "fewer than 10 photos" in by_class["surprised"]["note"]
    assert by_class["surprised"]["right_pass"] == 0.0  # fails closed: none of its right-expression R pass
    assert by_class["neutral"]["judged"] and by_class["neutral"]["wrong_pass"] <= 0.05
    assert unplanned_expressions(qc, {"selftest": card}) == frozenset({"surprised"})
    opted_in = qc.model_copy(update={"expression": qc.expression.model_copy(update={"judge_unjudgeable": True})})
    assert unplanned_expressions(opted_in, {"selftest": card}) == frozenset()
    assert record_selftest(qc.model_copy(update={"expression": qc.expression.model_copy(
        update={"calibrate": False})}), store, "run-x", seed=1) is None


def test_targets_of_unjudgeable_classes_are_refused_with_a_reason_row_each():
    sources = synthetic_sources(60, 4)
    cfg = load_config(overrides=["pairing.split_closed=false"]).pairing
    kw = dict(seed=3, fingerprint="f", splits={})
    full = plan_round(sources, cfg, 0, **kw)
    skipped = plan_round(sources, cfg, 0, skip_labels=frozenset({"surprised"}), **kw)
    label_of = dict(zip(sources["source_id"].to_pylist(), sources["expression"].to_pylist(), strict=True))
    key_of = dict(zip(sources["source_id"].to_pylist(), sources["input_key"].to_pylist(), strict=True))
    t_ids = full.plan["target_source_id"].to_pylist()
    surprised = {key_of[t] for t in t_ids if label_of[t] == "surprised"}
    assert surprised, "the synthetic corpus must have surprised targets"
    assert not {label_of[t] for t in skipped.plan["target_source_id"].to_pylist()} & {"surprised"}
    refused = {r["item_id"] for r in skipped.refused if r["reason"] == "expression_unjudgeable"}
    assert refused == surprised
    # every other target keeps its candidate exactly
    kept = {c for c, t in zip(full.plan["candidate_id"].to_pylist(), t_ids, strict=True) if label_of[t] != "surprised"}
    assert set(skipped.plan["candidate_id"].to_pylist()) == kept


def test_wilson_interval():
    assert wilson_interval(0, 0) == (None, None)
    lo, hi = wilson_interval(50, 100)
    assert 0.40 < lo < 0.41 and 0.59 < hi < 0.60
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
