"""Real faults injected into real rounds (Ray, dlib, DuckDB, Parquet): an item whose stage actor exits every
time it is processed, a model raising on one item and on every item (ingest, qc), and the driver SIGKILLed while
paused in ingest, with a second driver on the same run id refused meanwhile; the rerun takes over the dead driver's
lock and ends with the uninterrupted run's rows. (A driver killed inside a commit, between a shard's files and its
marker, is tests/pipeline/test_round.py's SIGKILL test.)

Faults come from the `run.fault_injection` testing hook (core/faults.py): an exception, os._exit of the
actor, or a pause at which this test SIGKILLs the driver. Nothing of Ray, Parquet or DuckDB is mocked.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from manifests.lock import LOCK_NAME, RunLockedError
from manifests.query import connect
from manifests.store import ManifestStore
from pipeline.commit import StageFailureError
from pipeline.run_idi import run_idi
from tests.baseline_run import N_IDS
from tests.conftest import REPO
from tests.hardening.conftest import round_config, rows_that_matter, uncommitted_files

pytestmark = pytest.mark.slow

TABLES = ("sources", "candidates", "qc", "triples")


@pytest.fixture(scope="module")
def corpus(baseline_run) -> Path:
    return baseline_run.corpus


@pytest.fixture(scope="module")
def baseline(baseline_run):
    store = baseline_run.store
    return baseline_run.cfg, store, {t: rows_that_matter(store, t) for t in TABLES}


def _candidate_ids(baseline) -> list[str]:
    return baseline[2]["qc"].column("candidate_id").to_pylist()


def _fault(at: str, item: str, action: str, marker: Path | None = None) -> str:
    spec = f"{{at: {at}, item: '{item}', action: {action}" + (f", marker: '{marker}'" if marker else "") + "}"
    return f"run.fault_injection={spec}"


def _assert_same_as_baseline(store: ManifestStore, baseline) -> None:
    for table in TABLES:
        got = rows_that_matter(store, table)
        assert got.equals(baseline[2][table]), f"{table} differs from the uninterrupted run"
    qc_ids = store.read_table("qc", ["candidate_id"]).column("candidate_id").to_pylist()
    assert len(qc_ids) == len(set(qc_ids)) == baseline[2]["qc"].num_rows  # every item exactly once
    assert uncommitted_files(store) == []


# -- a stage actor dies mid-batch --------------------------------------------------------------------------

# An actor that dies mid-batch once (not poison) takes the same path as the poison item's batch mates below: its
# batch runs again one item at a time and every item is decided once, as in the clean run.


def test_item_that_kills_its_actor_every_time_is_rejected_after_max_attempts_within_one_run(
        baseline, corpus, tmp_path, capsys):
    """A poison item (its worker process dies whenever it is processed) in a batch of 2: the batch the dead actor
    was on runs again one item at a time (pipeline/isolate.py). The poison item kills its worker alone on attempt
    1 (an `attempts` row) and on attempt 2 = run.max_attempts (one `worker_crashed` reject); its batch mates are
    decided alone, exactly as in the clean run; the phase then restarts without spending a retry
    (ray.max_task_retries=0), so ONE run ends with exit 0, and a rerun has nothing left to do."""
    from pipeline.run_idi import main

    victim = _candidate_ids(baseline)[0]
    out = tmp_path / "runs"
    sets = [f"corpus.root={corpus}", f"run.output_root={out}", "run.name=hard", "qc.expression.calibrate=false",
            "run.max_attempts=2",
            "ray.max_task_retries=0", "expression_transfer.resources.batch_size=2",
            _fault("expression_transfer", victim, "exit")]
    args = [a for s in sets for a in ("--set", s)]
    started = time.monotonic()
    assert main(args) == 0
    seconds = time.monotonic() - started
    assert "killed their worker on every attempt (rejected as worker_crashed): expression_transfer: 1" in \
        capsys.readouterr().out
    store = ManifestStore.open(str(out / baseline[0].resolved_run_id()))
    con = connect(store)
    rows = con.execute("select stage, reason, attempt, transient, detail from rejects where item_id = ?",
                       [victim]).fetchall()
    assert [r[:4] for r in rows] == [("expression_transfer", "worker_crashed", 2, True)]
    assert "worker process died while stage expression_transfer processed this item alone (attempt 2 of 2)" \
        in rows[0][4]
    assert con.execute("select stage, attempt from attempts where item_id = ?", [victim]).fetchall() == \
        [("expression_transfer", 1)]
    assert con.execute("select count(*) from attempts").fetchone()[0] == 1  # nobody else was blamed
    assert con.execute("select reason, accepted from qc where candidate_id = ?", [victim]).fetchone() == \
        ("worker_crashed", False)
    # every other candidate is decided exactly as in the clean run, each exactly once
    for table, key in (("candidates", "candidate_id"), ("qc", "candidate_id"), ("triples", "triple_id")):
        got, clean = rows_that_matter(store, table), baseline[2][table]
        assert got.filter(pc.not_equal(got[key], victim)).equals(clean.filter(pc.not_equal(clean[key], victim))), \
            f"{table} differs from the clean run"
    qc_ids = store.read_table("qc", ["candidate_id"]).column("candidate_id").to_pylist()
    assert len(qc_ids) == len(set(qc_ids)) == baseline[2]["qc"].num_rows
    # the victim's batch mates were among the items decided one at a time (no innocent blamed: see above)
    alone = {i for f in store.fs.glob(f"{store.manifests_dir}/qc/part-gen-r0-alone-*.parquet")
             for i in pq.read_table(f).column("candidate_id").to_pylist()}
    assert alone - {victim}, "the poison item's batch mates should have been run alone"
    assert uncommitted_files(store) == []
    assert not (out / baseline[0].resolved_run_id() / LOCK_NAME).exists()
    assert seconds < 600  # bounded: no endless restart loop
    # a rerun decides nothing new and exits 0
    before = {t: rows_that_matter(store, t) for t in (*TABLES, "rejects")}
    assert main(args) == 0
    for table, rows_before in before.items():
        assert rows_that_matter(store, table).equals(rows_before), table
    assert store.read_table("attempts").num_rows == 1


# -- a model raises ----------------------------------------------------------------------------------------

def test_model_error_on_one_item_becomes_a_stage_error_reject_row(baseline, corpus, tmp_path):
    victim = _candidate_ids(baseline)[1]
    cfg = round_config(corpus, tmp_path / "runs", _fault("expression_transfer", victim, "raise"))
    result = run_idi(cfg)
    store = ManifestStore.open(result["timing"]["run_url"])
    con = connect(store)
    rows = con.execute("select stage, reason, detail from rejects where item_id = ?", [victim]).fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("expression_transfer", "stage_error")
    assert "InjectedFault: injected fault at expression_transfer" in rows[0][2]
    assert con.execute("select reason from qc where candidate_id = ?", [victim]).fetchone() == ("stage_error",)
    # every other item is decided exactly as in the clean run
    clean = baseline[2]["qc"].filter(pc.not_equal(baseline[2]["qc"]["candidate_id"], victim))
    got = rows_that_matter(store, "qc")
    assert got.filter(pc.not_equal(got["candidate_id"], victim)).equals(clean)
    assert result["summary"]["rounds"][0]["planned"] == baseline[2]["qc"].num_rows


@pytest.mark.parametrize("stage", ["ingest", "qc"])
def test_model_failing_on_every_item_stops_the_job_with_a_clear_error(baseline, corpus, tmp_path, stage):
    # painted mouths: every one of the 6 candidates reaches QC (none refused as no_mouth_donor), so the broken model
    # fails on more than min_items_for_abort items
    cfg = round_config(corpus, tmp_path / "runs", _fault(stage, "*", "raise"), "run.min_items_for_abort=4",
                       "expression_transfer.painted_mouths=true")
    with pytest.raises(StageFailureError, match=r"failed with stage_error .*model is likely broken") as info:
        run_idi(cfg)
    assert f"injected fault at {stage}" in str(info.value)
    store = ManifestStore.open(str(Path(cfg.run.output_root) / cfg.resolved_run_id()))
    # nothing was rejected for the broken model's sake: a fixed rerun retries every item
    assert connect(store).execute("select count(*) from rejects where reason = 'stage_error'").fetchone()[0] == 0
    if stage == "qc":
        assert store.read_table("qc").num_rows == 0 and store.read_table("sources").num_rows == 2 * N_IDS


# -- the driver is SIGKILLed, then rerun -------------------------------------------------------------------

def _start_driver(corpus: Path, out: Path, ray_address: str, fault: str) -> subprocess.Popen:
    args = [sys.executable, str(REPO / "pipeline" / "run_idi.py"), "--set", f"corpus.root={corpus}",
            "--set", f"run.output_root={out}", "--set", "run.name=hard", "--set", "qc.expression.calibrate=false",
            "--set", "run.commit_rows=2",
            "--set", f"ray.address={ray_address}", "--set", fault]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the driver ended (rc={proc.returncode}) before the kill point:\n"
                                 + proc.stderr.read().decode(errors="replace")[-3000:])
        time.sleep(0.2)
    raise AssertionError("kill point not reached in time")


# The driver of a run on a shared Ray cluster killed in ingest (phase 1). The generation phase's hardest point, a
# commit worker paused between a shard's files and its marker, is tests/pipeline/test_round.py's SIGKILL test
# (the driver's whole session killed, written-but-uncommitted files checked hidden from DuckDB). Pausing inside
# identity_swap or qc adds no new path (the driver dies, the stage's actors with it) and cost CI a minute each.
def test_driver_sigkilled_in_ingest_then_rerun_gives_the_uninterrupted_result(baseline, corpus, tmp_path):
    cfg0, _, base = baseline
    ids = _candidate_ids(baseline)
    item = sorted(base["sources"].column("input_key").to_pylist())[3]
    marker = tmp_path / "ingest.paused"
    out = tmp_path / "runs"
    import ray
    proc = _start_driver(corpus, out, ray.get_runtime_context().gcs_address, _fault("ingest", item, "pause", marker))
    run_dir = out / cfg0.resolved_run_id()
    try:
        _wait_for_file(marker, proc)
        # a second driver on the same run id is refused while the first one lives
        with pytest.raises(RunLockedError, match=f"pid {proc.pid} on host"):
            run_idi(round_config(corpus, out))
    finally:
        proc.send_signal(signal.SIGKILL)  # the driver only: its Ray job's actors die with it
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store = ManifestStore.open(str(run_dir))
    done = store.read_column_set("qc", "candidate_id")
    assert len(done) < len(ids), "the kill should land before the round ends"
    assert (run_dir / LOCK_NAME).exists()  # left behind by the dead driver

    resumed = run_idi(round_config(corpus, out))  # takes over the stale lock, sweeps orphans, resumes
    assert resumed["timing"]["items"] >= len(ids) - len(done)
    _assert_same_as_baseline(store, baseline)
    assert not (run_dir / LOCK_NAME).exists()
