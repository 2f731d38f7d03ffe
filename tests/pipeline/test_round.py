"""A full IDI round through real Ray, dlib and DuckDB on 3 London identities (the session's clean run,
tests/baseline_run.py): summary, schema, traceability, rerun, resume after SIGKILL, and `ciep query` against known
counts."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.splits import split_of
from manifests.query import connect
from manifests.schemas import TRIPLES
from manifests.store import ManifestStore
from pipeline.config import load_config
from pipeline.run_idi import run_idi
from tests.baseline_run import N_IDS
from tests.conftest import REPO, london_identities
from tests.hardening.conftest import uncommitted_files

pytestmark = pytest.mark.slow

# Columns of a triple that do not depend on where the run was written.
CONTENT_COLUMNS = ["triple_id", "round", "identity_i", "identity_j", "expression", "s_source_id", "s_sha256",
                   "r_sha256", "t_source_id", "t_sha256", "id_sim_rt", "id_sim_rj", "expr_dist_rt", "seed",
                   "expression_model_sha256", "swap_model_sha256", "identity_model_sha256", "thresholds"]


def round_config(corpus: Path, output_root: Path, *extra: str):
    # a corpus of a few identities cannot certify an expression class (qc/selftest.py fails closed and nothing would
    # be planned): these round tests turn the calibrated check off; tests/qc/test_selftest_round.py runs it
    return load_config(overrides=[f"corpus.root={corpus}", f"run.output_root={output_root}", "run.name=test",
                                  "qc.expression.calibrate=false", *extra])


def triples_content(store: ManifestStore) -> list[tuple]:
    t = store.read_table("triples", CONTENT_COLUMNS).sort_by("triple_id")
    return [tuple(r.values()) for r in t.to_pylist()]


@pytest.fixture(scope="module")
def corpus(baseline_run) -> Path:
    return baseline_run.corpus


@pytest.fixture(scope="module")
def baseline(baseline_run):
    return baseline_run.cfg, baseline_run.store, baseline_run.result


N = 2 * N_IDS  # images, and candidates of the round


def test_round_summary_counts_are_consistent(baseline):
    cfg, store, result = baseline
    s = result["summary"]
    assert s["sources"] == N and s["ingest_rejects"] == {}
    (r0,) = s["rounds"]
    assert r0["planned"] == N
    assert sum(r0["reasons"].values()) == N
    assert r0["accepted"] == r0["reasons"].get("accepted", 0) == s["triples"]
    assert r0["stages"]["identity_swap"]["out"] <= r0["stages"]["expression_transfer"]["out"] <= N
    # The CPU backends must actually work on real faces: (nearly) every candidate reaches QC with a face.
    con = connect(store)
    assert con.execute("select count(*) from qc where face_found").fetchone()[0] >= N - 1
    assert s["triples"] >= 2, r0["reasons"]


def test_manifest_schema_and_traceability(baseline):
    cfg, store, _ = baseline
    files = store.committed_files("triples")
    assert files
    schema = pq.read_schema(files[0])
    assert schema.metadata[b"ciep.schema_version"] == TRIPLES.metadata[b"ciep.schema_version"]
    assert [f.name for f in schema] == [f.name for f in TRIPLES]
    triples = store.read_table("triples").to_pylist()
    # which expression regions the swap kept from the transfer (identity_swap.keep_regions) is on every candidate
    kept = connect(store).execute("select distinct swap_keep_regions from candidates where status = 'ok'").fetchall()
    assert kept == [(",".join(cfg.identity_swap.keep_regions),)] and "left-eye" in kept[0][0]
    splits = dict(cfg.release.splits)
    split_sizes = Counter(split_of(i, splits) for i in london_identities()[:N_IDS])
    for t in triples:
        assert t["identity_i"] != t["identity_j"]
        if split_sizes[split_of(t["identity_i"], splits)] > 1:  # pairing.split_closed keeps j in i's split
            assert split_of(t["identity_i"], splits) == split_of(t["identity_j"], splits)
        for key in ("s", "r", "t"):
            data = Path(t[f"{key}_path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == t[f"{key}_sha256"]
        assert t["swap_model_sha256"] and t["expression_model_sha256"] and t["identity_model_sha256"]
        thresholds = json.loads(t["thresholds"])
        # identity thresholds: calibrated from the run's sources (config null), as run.json records them
        applied = json.loads((Path(store.root) / "run.json").read_text())["identity_calibration"]
        assert thresholds["max_leak_similarity"] == applied["max_leak_similarity"]
        if thresholds["max_leak_similarity"] is not None:
            assert t["id_sim_rt"] <= thresholds["max_leak_similarity"]
            assert t["id_sim_rj"] >= thresholds["min_swap_similarity"]
        # the calibrated expression check is off for this 3-identity corpus (round_config): no class thresholds,
        # and run.json holds no self-test
        assert thresholds["expression_class_thresholds"] is None
        assert json.loads((Path(store.root) / "run.json").read_text())["selftest"] is None
        assert t["config_fingerprint"] == cfg.data_fingerprint()
        # the gallery margin: calibrated from the run's real photos (qc/identity_margin.py), as run.json records it
        assert thresholds["min_identity_margin"] == applied["min_margin"] and applied["margin_note"]
    # same-person clustering: resolved for the run (pipeline/planning/same_person.py) and recorded with why
    same = json.loads((Path(store.root) / "run.json").read_text())["identity_calibration"]["same_person"]
    assert same["source"] in ("calibrated", "overlap", "uncalibrated") and same["note"]
    assert same["merged"] == (same["same_person_similarity"] is not None)
    # Every QC decision has exactly one row, and every triple is an accepted QC row.
    con = connect(store)
    assert con.execute("select count(*), count(distinct candidate_id) from qc").fetchone() == (N, N)
    assert con.execute("select count(*) from triples t join qc q on q.candidate_id = t.triple_id "
                       "where q.accepted").fetchone()[0] == len(triples)


def test_rerun_of_a_finished_round_does_nothing(baseline):
    cfg, store, _ = baseline
    before = triples_content(store)
    markers = len(store.markers())
    again = run_idi(cfg)
    assert again["timing"]["items"] == 0
    assert len(store.markers()) == markers
    assert triples_content(store) == before


def _kill_session(sid: int) -> None:
    """SIGKILL every process of the driver's session at once. Not os.killpg alone: Ray's workers run in process
    groups of their own (same session), so they outlived the driver's group for a moment and commit tasks in
    flight could still land shards after `partial` was read."""
    import psutil
    victims = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                victims.append(p.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # the driver is the caller's child (reaped by proc.wait()); the rest are gone once they no longer exist
    psutil.wait_procs([p for p in map(_process, victims) if p is not None and p.pid != sid], timeout=30)


def _process(pid: int):
    import psutil
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def test_resume_after_sigkill_mid_round_gives_the_same_triples(baseline, corpus: Path, tmp_path: Path):
    cfg, store, _ = baseline
    out = tmp_path / "runs_killed"
    marker = tmp_path / "commit-paused.marker"
    # One commit worker pauses between a generation shard's files and its marker (the others go on); once
    # other shards are committed the test SIGKILLs the driver's whole session (its own local Ray):
    # the round dies mid-commit with a written-but-uncommitted shard on disk. Its Ray workers die with it (the whole
    # session: they are in process groups of their own), so nothing commits after `partial` is read.
    fault = f"run.fault_injection={{at: commit, item: 'gen-r0-*', action: pause_once, marker: '{marker}'}}"
    # batches of 2 and shards of 2: the round's 6 candidates reach the commit stage as 3 blocks, each its own task
    small = ["run.commit_rows=2", "qc.expression.calibrate=false",
             *(f"{s}.resources.batch_size=2" for s in ("expression_transfer", "identity_swap", "qc"))]
    args = [sys.executable, str(REPO / "pipeline" / "run_idi.py"), "--set", f"corpus.root={corpus}",
            "--set", f"run.output_root={out}", "--set", f"run.name={cfg.run.name}", "--set", fault]
    args += [a for s in small for a in ("--set", s)]
    proc = subprocess.Popen(args, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    killed_store = ManifestStore.open(str(out / cfg.resolved_run_id()))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if marker.exists() and killed_store.fs.exists(killed_store.manifests_dir) \
                    and killed_store.read_column_set("qc", "candidate_id"):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-3000:]  # type: ignore[union-attr]
    finally:
        _kill_session(proc.pid)
        proc.wait()
    partial = killed_store.read_column_set("qc", "candidate_id")
    assert 0 < len(partial) < N, f"the kill should land mid-round: {len(partial)} decided, paused: {marker.exists()}"
    # killed between a shard's files and its marker: the files are there, DuckDB must not see them
    orphans = uncommitted_files(killed_store)
    hidden = {r for f in orphans if "/qc/" in f for r in pq.read_table(f).column("candidate_id").to_pylist()}
    assert hidden, f"the kill should land inside a commit: {orphans}"
    assert not hidden & {r[0] for r in connect(killed_store).execute("select candidate_id from qc").fetchall()}
    resumed = run_idi(load_config(overrides=[f"corpus.root={corpus}", f"run.output_root={out}",
                                              f"run.name={cfg.run.name}", *small]))
    assert resumed["timing"]["items"] == N - len(partial)
    assert triples_content(killed_store) == triples_content(store)
    qc = killed_store.read_table("qc", ["candidate_id"]).column("candidate_id").to_pylist()
    assert len(qc) == len(set(qc)) == N
    assert uncommitted_files(killed_store) == []


def test_ciep_query_cli_reads_the_run(baseline):
    cfg, store, result = baseline
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "pipeline.cli", "query", "--output-root", cfg.run.output_root, "--run",
           cfg.resolved_run_id(), "--format", "json"]
    out = subprocess.run(cmd + ["select reason, count(*) as n from qc group by 1 order by 1"], cwd=REPO,
                         env=env, capture_output=True, text=True, check=True).stdout
    got = {row["reason"]: row["n"] for row in json.loads(out)}
    assert got == result["summary"]["rounds"][0]["reasons"]
    out = subprocess.run(cmd + ["pass-rate"], cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    (row,) = json.loads(out)
    assert row["candidates"] == N and row["accepted"] == result["summary"]["triples"]
