"""Re-deciding from stored scores: a new decision version, old ones queryable, no image touched."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from manifests.query import connect
from manifests.store import ManifestStore
from manifests.synthetic import THRESHOLDS, write_synthetic_run
from pipeline.cli import qc_main
from pipeline.config import load_config
from qc.redecide import current_version, redecide

SAME_AS_SYNTHETIC = [f"qc.identity.max_leak_similarity={THRESHOLDS['max_leak_similarity']}",
                     f"qc.identity.min_swap_similarity={THRESHOLDS['min_swap_similarity']}",
                     f"qc.expression.max_distance={THRESHOLDS['max_expression_distance']}",
                     f"qc.quality.min_sharpness={THRESHOLDS['min_sharpness']}", "qc.identity.min_margin=0"]


def _count(con, sql: str) -> int:
    return con.execute(sql).fetchone()[0]


def test_redecide_versions_and_views(tmp_path: Path):
    url = str(tmp_path / "run")
    write_synthetic_run(url, candidates_per_round=200, seed=3)
    store = ManifestStore.open(url)
    before = connect(store)
    n, acc0 = _count(before, "select count(*) from qc"), _count(before, "select count(*) from triples")
    assert current_version(store) == 0 and 0 < acc0 < n

    same = redecide(store, load_config(overrides=SAME_AS_SYNTHETIC).qc)  # the synthetic run's own rule
    assert (same.version, same.candidates, same.accepted, same.changed) == (1, n, acc0, 0)
    strict = redecide(store, load_config(overrides=[*SAME_AS_SYNTHETIC, "qc.expression.max_distance=0.05"]).qc)
    assert strict.version == 2 and strict.accepted < acc0 and strict.changed == acc0 - strict.accepted

    con = connect(store)
    assert _count(con, "select count(*) from qc") == n  # the latest version only
    assert _count(con, "select count(*) from qc_all") == 3 * n  # every version stays queryable
    assert _count(con, "select count(*) from triples") == strict.accepted
    assert _count(con, "select count(*) from qc where accepted and expr_dist_rt > 0.05") == 0
    assert _count(con, "select count(*) from triples_all where decision_version = 1") == acc0
    assert _count(con, "select count(*) from qc where reason = 'expression_lost'") >= acc0 - strict.accepted
    assert _count(con, "select count(distinct thresholds) from qc") == 1


def test_cli_refuses_non_qc_keys_and_writes_run_json(tmp_path: Path, capsys):
    out = tmp_path / "runs"
    run_id = write_synthetic_run(str(out / "synthetic-1"), candidates_per_round=20, seed=1)
    with pytest.raises(SystemExit):
        qc_main(["redecide", "--output-root", str(out), "--run", run_id, "--set", "run.seed=3"])
    sets = [arg for o in SAME_AS_SYNTHETIC for arg in ("--set", o)]
    assert qc_main(["redecide", "--output-root", str(out), "--run", run_id, *sets]) == 0
    assert "decision version 1" in capsys.readouterr().out
    import json
    info = json.loads((out / "synthetic-1" / "run.json").read_text())
    assert info["decisions"][-1]["decision_version"] == 1


def test_rerun_with_a_changed_threshold_redecides_without_touching_images(baseline_run, tmp_path: Path):
    from pipeline.run_idi import run_idi
    from tests.hardening.conftest import round_config

    # a finished run (a copy of the session's clean run, so that its own manifests stay as they are)
    first = baseline_run.cfg.resolved_run_id()
    url = str(tmp_path / "runs" / first)
    shutil.copytree(baseline_run.store.root, url)
    images = sorted(p for p in Path(url, "images").rglob("*") if p.is_file())
    assert images
    stamps = {p: os.stat(p).st_mtime_ns for p in images}
    # the README's example: a changed QC threshold reruns the same run id and only re-decides
    second = run_idi(round_config(baseline_run.corpus, tmp_path / "runs", "qc.expression.max_distance=0.01"))
    assert second["timing"]["run_id"] == first
    assert second["timing"]["items"] == 0  # nothing ingested or generated again
    assert sorted(p for p in Path(url, "images").rglob("*") if p.is_file()) == images
    assert {p: os.stat(p).st_mtime_ns for p in images} == stamps
    store = ManifestStore.open(url)
    assert current_version(store) == 1
    con = connect(store)
    assert _count(con, "select count(*) from qc where accepted and expr_dist_rt > 0.01") == 0
    assert _count(con, "select count(*) from qc_all where decision_version = 0") == \
        _count(con, "select count(*) from qc")
