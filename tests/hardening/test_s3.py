"""The same round with every path on S3: a real S3 server (moto's server mode on 127.0.0.1, started here),
reached through fsspec/s3fs by the driver and the Ray actors; DuckDB reads the manifests through the registered
s3fs filesystem. The credentials are distinctive fake strings and must not appear in anything written or logged."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.location import Location
from manifests.lock import LOCK_NAME, RunLock, RunLockedError
from manifests.query import connect
from manifests.store import ManifestStore
from pipeline.config import load_config
from pipeline.run_idi import run_idi
from tests.conftest import DEMO_CORPUS, REPO, london_identities
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, moto_s3, opts_yaml

pytestmark = pytest.mark.slow

BUCKET = "ciep-hardening"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server in this process, on 127.0.0.1; a bucket holding 3 London identities."""
    with moto_s3(BUCKET) as server:
        for ident in london_identities()[:3]:
            for f in sorted((DEMO_CORPUS / ident).iterdir()):
                server.fs.pipe_file(f"{BUCKET}/corpus/{ident}/{f.name}", f.read_bytes())
        yield server.endpoint, server.opts, server.fs


@pytest.fixture(scope="module")
def s3_run(s3, ray_session, tmp_path_factory):
    endpoint, opts, fs = s3
    # credentials from config here (they travel to the actors inside the config); the CLI test below uses env
    cfg = load_config(overrides=[f"corpus.root=s3://{BUCKET}/corpus", f"run.output_root=s3://{BUCKET}/runs",
                                 "run.name=s3", "qc.expression.calibrate=false",
                                 f"corpus.storage_options={opts_yaml(opts)}",
                                 f"run.storage_options={opts_yaml(opts)}", "run.commit_rows=4"])
    assert ACCESS_KEY not in repr(cfg) and SECRET_KEY not in repr(cfg)
    handler_stream = tmp_path_factory.mktemp("logs") / "driver.log"
    handler = logging.FileHandler(handler_stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        result = run_idi(cfg)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    return cfg, result, handler_stream


def test_round_on_s3_writes_and_reads_everything_there(s3, s3_run):
    endpoint, opts, fs = s3
    cfg, result, _ = s3_run
    url = result["timing"]["run_url"]
    assert url == f"s3://{BUCKET}/runs/{cfg.resolved_run_id()}"
    s = result["summary"]
    assert s["sources"] == 6 and s["rounds"][0]["planned"] == 6 and s["triples"] >= 1, s
    store = ManifestStore.open(Location(url, opts))
    triples = store.read_table("triples").to_pylist()
    for t in triples:
        for k in ("s", "r", "t"):
            assert t[f"{k}_path"].startswith(f"s3://{BUCKET}/runs/")
            assert hashlib.sha256(fs.cat_file(t[f"{k}_path"])).hexdigest() == t[f"{k}_sha256"]
    # DuckDB over the committed shards on S3, through the registered s3fs filesystem, no extension downloads
    con = connect(store)
    assert con.execute("select count(*), count(distinct candidate_id) from qc").fetchone() == (6, 6)
    assert con.execute("select count(*) from triples").fetchone()[0] == len(triples)
    assert not con.execute("select count(*) from duckdb_extensions() where extension_name = 'httpfs' "
                           "and (loaded or installed)").fetchone()[0]
    assert not fs.exists(f"{BUCKET}/runs/{cfg.resolved_run_id()}/{LOCK_NAME}")  # released
    # a rerun on S3 resumes: nothing left to do
    assert run_idi(cfg)["timing"]["items"] == 0


def test_ciep_query_with_credentials_from_the_environment(s3, s3_run, tmp_path: Path):
    endpoint, _, _ = s3
    cfg, result, _ = s3_run
    config = tmp_path / "s3.yaml"
    config.write_text(yaml.safe_dump({"run": {"output_root": f"s3://{BUCKET}/runs",
                                              "storage_options": {"endpoint_url": endpoint,
                                                                  "client_kwargs": {"region_name": REGION}}}}))
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "query", "--config", str(config), "--run",
                          cfg.resolved_run_id(), "--format", "json", "pass-rate"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (row,) = json.loads(out.stdout)
    assert row["candidates"] == 6 and row["accepted"] == result["summary"]["triples"]
    for text in (out.stdout, out.stderr):
        assert ACCESS_KEY not in text and SECRET_KEY not in text


def test_run_lock_on_s3_is_a_conditional_put(s3):
    _, opts, fs = s3
    url = Location(f"s3://{BUCKET}/runs/lock-test", opts)
    first = RunLock(url).acquire()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock(url).acquire()
    first.release()
    assert not fs.exists(f"{BUCKET}/runs/lock-test/{LOCK_NAME}")
    # a lock left by a dead driver on this host is taken over (a PUT conditional on the stale lock's ETag)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fs.pipe_file(f"{BUCKET}/runs/lock-test/{LOCK_NAME}",
                 json.dumps(dict(host=socket.gethostname(), pid=dead.pid, pid_started=0.0, token="t")).encode())
    RunLock(url).acquire().release()


def test_credentials_appear_nowhere(s3, s3_run, capfd):
    """Every object in the bucket, the driver's log records, Ray's session logs, stdout/stderr."""
    _, _, fs = s3
    cfg, _, driver_log = s3_run
    secrets = (ACCESS_KEY.encode(), SECRET_KEY.encode())
    leaks = []
    objects = fs.find(BUCKET)
    assert len(objects) > 20
    for path in objects:
        data = fs.cat_file(path)
        leaks += [f"s3://{path}" for s in secrets if s in data]
    run_json = json.loads(fs.cat_file(f"{BUCKET}/runs/{cfg.resolved_run_id()}/run.json"))
    assert run_json["config"]["run"]["storage_options"]["key"] == "<redacted>"
    assert run_json["config"]["corpus"]["storage_options"]["secret"] == "<redacted>"
    assert run_json["config"]["run"]["storage_options"]["endpoint_url"].startswith("http://127.0.0.1:")
    assert driver_log.stat().st_size > 0
    leaks += [str(driver_log) for s in secrets if s in driver_log.read_bytes()]
    import ray
    session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
    for f in session_dir.rglob("*"):
        if f.is_file() and f.suffix in (".log", ".out", ".err", ".txt", ".json"):
            data = f.read_bytes()
            leaks += [str(f) for s in secrets if s in data]
    captured = capfd.readouterr()
    leaks += ["stdout/stderr" for s in secrets if s.decode() in captured.out + captured.err]
    assert not leaks, leaks
