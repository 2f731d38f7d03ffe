"""`ray job submit` of pipeline/run_idi.py against a token-authenticated head this test starts and stops."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from manifests.store import ManifestStore
from pipeline.config import load_config
from tests.conftest import REPO, london_identities, make_corpus

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head with token auth, in its own process group so teardown ends exactly what we started."""
    tmp_path = tmp_path_factory.mktemp("head")
    ray_bin = Path(sys.executable).parent / "ray"
    env = dict(os.environ, HOME=str(tmp_path / "home"), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    (tmp_path / "home").mkdir()
    subprocess.run([str(ray_bin), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    # Explicit ports: another Ray on this machine (the test session's) already holds the agent defaults.
    gcs_port, dash_port, agent_port = _free_port(), _free_port(), _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ciep-ray-", dir="/tmp")  # Ray's socket paths must stay short
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={gcs_port}", f"--dashboard-port={dash_port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-agent-listen-port={agent_port}",
         "--node-ip-address=127.0.0.1", "--num-cpus=2",
         f"--temp-dir={ray_tmp}"],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dash_port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", dash_port), timeout=1):
                    break
            except OSError:
                if head.poll() is not None:
                    raise RuntimeError(head.stdout.read().decode(errors="replace")) from None
                time.sleep(0.5)
        else:
            raise RuntimeError("Ray dashboard did not come up")
        # The dashboard port opens before the job agent is ready ("No available agent to submit job").
        while time.monotonic() < deadline:
            probe = subprocess.run([str(ray_bin), "job", "list", "--address", address], env=env,
                                   capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                break
            time.sleep(1)
        yield address, env, ray_bin
    finally:
        # graceful, then whatever is left (`ray start --block` often outlives SIGTERM: waiting longer gains nothing)
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        head.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ray_job_submit_runs_a_round(ray_head, tmp_path: Path):
    address, env, ray_bin = ray_head
    corpus = make_corpus(tmp_path / "corpus", london_identities()[:3])
    out = tmp_path / "runs"
    workdir = tmp_path / "workdir"  # a lean working dir: code and configs, no demo corpus
    shutil.copytree(REPO, workdir, ignore=shutil.ignore_patterns("data", "runs", ".git", "tests", "*.egg-info",
                                                                  "__pycache__", "benchmarks"))
    cmd = [str(ray_bin), "job", "submit", "--address", address, "--working-dir", str(workdir), "--",
           sys.executable, "pipeline/run_idi.py", "--config", "configs/demo.yaml",
           "--set", f"corpus.root={corpus}", "--set", f"run.output_root={out}", "--set", "run.name=job",
           "--set", "qc.expression.calibrate=false"]
    # The head's job agent registers some time after the dashboard answers (long on a loaded 2-core box).
    deadline = time.monotonic() + 300
    while True:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in proc.stdout + proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "accepted triples" in proc.stdout
    cfg = load_config(overrides=[f"corpus.root={corpus}", f"run.output_root={out}", "run.name=job"])
    store = ManifestStore.open(str(out / cfg.resolved_run_id()))
    assert store.read_table("sources").num_rows == 6
    assert store.read_table("qc").num_rows == 6


def test_job_submit_without_the_token_is_refused(ray_head, tmp_path: Path):
    address, env, ray_bin = ray_head
    no_token = dict(env, HOME=str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()
    proc = subprocess.run([str(ray_bin), "job", "list", "--address", address], env=no_token,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    # The job client refuses for the missing token, not for anything else (Ray 2.60: raised as
    # ray.exceptions.AuthenticationError by the token loader before any request is sent).
    out = proc.stdout + proc.stderr
    assert "AuthenticationError: Token authentication is enabled but Ray couldn't find an authentication token" \
        in out, out[-3000:]
