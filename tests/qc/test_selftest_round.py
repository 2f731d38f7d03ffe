"""A real round with the calibrated expression decision (the shipped default): the self-test runs after ingest,
is kept (qc_selftest, run.json, `ciep query qc-selftest`, the summary), the unjudgeable class (too few photos) is
not planned, and every QC row is decided by its class threshold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from manifests.query import connect
from manifests.store import ManifestStore
from pipeline.cli import query_main
from pipeline.config import load_config
from tests.conftest import DEMO_CORPUS, london_identities

pytestmark = pytest.mark.slow
WITHOUT_NEUTRAL = 3  # identities whose neutral photo is left out: 9 neutral photos, too few to certify the class


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory, ray_session):
    from pipeline.run_idi import run_idi
    base = tmp_path_factory.mktemp("selftest_round")
    corpus = base / "corpus"
    for k, ident in enumerate(london_identities()):
        shutil.copytree(DEMO_CORPUS / ident, corpus / ident)
        if k < WITHOUT_NEUTRAL:
            (corpus / ident / "neutral.jpg").unlink()
    # configs/demo.yaml: smiling has 9 photos of another expression, enough for the demo's 10 % target
    cfg = load_config(overrides=[f"corpus.root={corpus}", f"run.output_root={base / 'runs'}", "run.name=selftest"])
    result = run_idi(cfg)
    return cfg, result, ManifestStore.open(result["timing"]["run_url"])


def test_the_self_test_is_in_run_json_and_names_the_unjudgeable_class(calibrated_run):
    cfg, result, store = calibrated_run
    card = json.loads((Path(store.root) / "run.json").read_text())["selftest"]["expression"]
    assert card["judged"] == ["smiling"] and card["unjudgeable"] == ["neutral"]
    neutral = next(c for c in card["classes"] if c["class"] == "neutral")
    assert "9 labelled photos" in neutral["why_not"] and "fewer than 10 photos" in neutral["why_not"]
    for c in card["classes"]:
        if c["judged"]:
            assert c["wrong_pass"] <= cfg.qc.expression.max_false_pass and c["right_pass"] >= 0.5
    assert result["summary"]["selftest"] and any(not c["judged"] for c in result["summary"]["selftest"])


def test_unjudgeable_targets_get_a_reason_row_and_no_candidate(calibrated_run):
    _, result, store = calibrated_run
    con = connect(store)
    refused = con.execute("select count(*) from rejects where stage = 'pairing' and reason = 'expression_unjudgeable'"
                          ).fetchone()[0]
    n = len(london_identities())
    assert refused == n - WITHOUT_NEUTRAL  # the neutral targets of the identities that have two photos
    assert con.execute("select count(*) from candidates where expression = 'neutral'").fetchone()[0] == 0
    assert result["summary"]["rounds"][0]["planned"] == n - WITHOUT_NEUTRAL  # their smiling targets


def test_every_decision_follows_its_class_threshold(calibrated_run):
    _, _, store = calibrated_run
    card = json.loads((Path(store.root) / "run.json").read_text())["selftest"]["expression"]
    want = {c["class"]: c["threshold"] if c["judged"] else None for c in card["classes"]}
    rows = connect(store).execute("select accepted, reasons, expr_class, expr_class_score, thresholds from qc "
                                  "where face_found").fetchall()
    assert rows
    for accepted, reasons, cls, score, thresholds in rows:
        applied = json.loads(thresholds)["expression_class_thresholds"]
        assert applied == want and cls == "smiling" and score is not None
        below = score < applied[cls] - 1e-6  # float32 column vs float64 threshold
        assert ("expression_not_recognised" in reasons) == below or abs(score - applied[cls]) < 1e-5
        if accepted:
            assert not below


def test_named_query_shows_the_self_test(calibrated_run, capsys):
    cfg, _, store = calibrated_run
    assert query_main(["qc-selftest", "--output-root", cfg.run.output_root, "--run", Path(store.root).name,
                       "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["expression"]: r["judged"] for r in rows} == {"neutral": False, "smiling": True}
