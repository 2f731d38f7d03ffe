"""A round on a real multi-node Ray cluster on this machine (a head with no CPUs and two worker nodes, each its own
raylet: ray.cluster_utils.Cluster, every stage with an actor on each node), output root on a real S3 server (moto on
127.0.0.1), with one worker node killed mid-round (the node whose QC actor holds an item): the triples equal the
single-node run's (the session's clean run of the same corpus, tests/baseline_run.py), every candidate decided once.

The round without a kill is not run separately (it was, until the CI budget ran out): this run is the same round on
the same cluster until the kill, and a clean run takes a subset of its paths."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.location import Location
from manifests.store import ManifestStore
from tests.baseline_run import N_IDS
from tests.conftest import REPO
from tests.pipeline.test_round import round_config, triples_content
from tests.s3_server import moto_s3, opts_yaml

pytestmark = pytest.mark.slow

BUCKET = "ciep-cluster"
# Small CPU shares and two actors a stage, so that both worker nodes host actors of every stage, and one node can
# finish the round alone.
RESOURCES = [f"{s}.resources.{k}={v}" for s in ("expression_transfer", "identity_swap", "qc")
             for k, v in (("num_cpus", 0.25), ("batch_size", 2), ("concurrency", 2))] + [
    "ingest.resources.concurrency=2", "run.commit_rows=2"]


@pytest.fixture(scope="module")
def s3():
    with moto_s3(BUCKET) as server:
        yield server.opts, server.fs


@pytest.fixture(scope="module")
def corpus(baseline_run) -> Path:
    return baseline_run.corpus


@pytest.fixture(scope="module")
def single_node(baseline_run, tmp_path_factory):
    """The config the cluster runs use (for their run id) and the single-node triples they must equal."""
    cfg = round_config(baseline_run.corpus, tmp_path_factory.mktemp("unused"), *RESOURCES)
    assert triples_content(baseline_run.store), "the single-node run made triples"
    return cfg, triples_content(baseline_run.store)


def _driver(corpus: Path, out: str, opts: dict, address: str, *extra: str) -> subprocess.Popen:
    sets = [f"corpus.root={corpus}", f"run.output_root={out}", "run.name=test", "qc.expression.calibrate=false",
            f"ray.address={address}",
            f"run.storage_options={opts_yaml(opts)}", *RESOURCES, *extra]
    args = [sys.executable, str(REPO / "pipeline" / "run_idi.py")] + [a for s in sets for a in ("--set", s)]
    env = dict(os.environ, CIEP_PROGRESS_BARS="0")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _s3_store(cfg, out: str, opts: dict) -> ManifestStore:
    return ManifestStore.open(Location(f"{out}/{cfg.resolved_run_id()}", opts))


def _node_of(pid: int, workers) -> object:
    """The worker node whose raylet is an ancestor of process `pid`."""
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in workers}
    while pid > 1:
        if pid in raylets:
            return raylets[pid]
        with open(f"/proc/{pid}/status") as fh:
            pid = int(next(line for line in fh if line.startswith("PPid:")).split()[1])
    raise AssertionError("the paused actor runs on no worker node")


def test_worker_node_killed_mid_round_gives_the_single_node_triples(single_node, cluster, s3, corpus, tmp_path):
    cfg, expected = single_node
    c, workers = cluster
    opts, _fs = s3
    out = f"s3://{BUCKET}/runs-b"
    marker = tmp_path / "qc.paused"
    proc = _driver(corpus, out, opts, c.address,
                   f"run.fault_injection={{at: qc, item: '*', action: pause_once, marker: '{marker}'}}")
    try:
        # the paused actor creates the marker (O_EXCL), then writes its pid in one write: wait for the pid itself
        deadline = time.monotonic() + 400
        while not (marker.exists() and marker.read_text().strip()):
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-4000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no QC actor reached an item"
            time.sleep(0.2)
        victim = _node_of(int(marker.read_text()), workers)
        c.remove_node(victim, allow_graceful=False)
        log = proc.communicate(timeout=600)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 0, log[-4000:]
    assert "workers lost" in log, log[-4000:]  # the kill landed mid-round and the phase was restarted
    assert "53727" not in log  # no actor whose restart Ray cannot promise
    store = _s3_store(cfg, out, opts)
    assert triples_content(store) == expected
    qc = store.read_table("qc", ["candidate_id"]).column("candidate_id").to_pylist()
    assert len(qc) == len(set(qc)) == 2 * N_IDS
