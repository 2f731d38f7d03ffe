"""Releases, exports, reports and queries of a run on S3 behind a custom endpoint (moto's server on 127.0.0.1):
every `ciep` command must reach it through `run.storage_options` from the config, never the default AWS one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from core.location import Location
from manifests.synthetic import write_synthetic_run
from pipeline.cli import main as ciep
from tests.s3_server import moto_s3

BUCKET = "ciep-publish"
ACCESS_KEY = "AKIACIEPPUBLISHFAKE01"
SECRET_KEY = "ciepPublishFakeSecret/0123456789abcdef"


@pytest.fixture(scope="module")
def s3_output(tmp_path_factory: pytest.TempPathFactory):
    """A moto S3 server on 127.0.0.1 with a synthetic run under s3://BUCKET/runs; a config that points at it."""
    with moto_s3(BUCKET, key=ACCESS_KEY, secret=SECRET_KEY) as server:
        run_id = write_synthetic_run(Location(f"s3://{BUCKET}/runs/synthetic-0", server.opts), identities=8,
                                     candidates_per_round=24)
        config = tmp_path_factory.mktemp("s3cfg") / "s3.yaml"
        config.write_text(yaml.safe_dump({"run": {"output_root": f"s3://{BUCKET}/runs",
                                                  "storage_options": server.opts}}))
        yield server.fs, str(config), run_id


def _json(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    rows: list[dict] = json.loads(capsys.readouterr().out)
    return rows


def test_release_export_report_query_on_s3_with_a_custom_endpoint(s3_output, capsys, tmp_path: Path):
    fs, config, run_id = s3_output
    common = ["--config", config]
    assert fs.exists(f"{BUCKET}/runs/{run_id}/run.json")

    # release: created, verified and listed on the S3 output root
    assert ciep(["release", "create", "--name", "s3rel", "--split", "train=0.5", "--split", "test=0.5",
                 *common]) == 0
    assert fs.exists(f"{BUCKET}/runs/releases/s3rel/release.json")
    info = json.loads(fs.cat_file(f"{BUCKET}/runs/releases/s3rel/release.json"))
    triples = info["stats"]["triples"]
    assert triples > 0 and info["source"]["run_url"] == f"s3://{BUCKET}/runs/{run_id}"
    # images go to the releases root's shared content-addressed pool (publish/image_pool.py), none in the release
    assert len(fs.find(f"{BUCKET}/runs/releases/_pool/images")) == info["stats"]["images"] > 0
    assert not fs.find(f"{BUCKET}/runs/releases/s3rel/images")
    capsys.readouterr()
    assert ciep(["release", "verify", "s3rel", *common]) == 0
    assert "OK: every file matches" in capsys.readouterr().out
    assert ciep(["release", "list", "--json", *common]) == 0
    assert [r["name"] for r in _json(capsys)] == ["s3rel"]

    # query: the run's manifests and the release's, through DuckDB over the endpoint's filesystem
    assert ciep(["query", "--run", run_id, "--format", "json", "select count(*) as n from triples", *common]) == 0
    assert _json(capsys)[0]["n"] >= triples
    assert ciep(["query", "--release", "s3rel", "--format", "json",
                 "select count(*) as n, count(distinct split) as splits from triples", *common]) == 0
    assert _json(capsys) == [{"n": triples, "splits": 2}]

    # export: default target under <output_root>/exports on S3, and an explicit s3:// --out
    assert ciep(["export", "s3rel", "--format", "imagefolder", *common]) == 0
    meta = fs.find(f"{BUCKET}/runs/exports/s3rel/imagefolder")
    assert sum(p.endswith("metadata.jsonl") for p in meta) == 2
    lines = sum(len(fs.cat_file(p).splitlines()) for p in meta if p.endswith("metadata.jsonl"))
    assert lines == triples
    assert ciep(["export", "s3rel", "--format", "webdataset", "--out", f"s3://{BUCKET}/wds", *common]) == 0
    assert any(p.endswith(".tar") for p in fs.find(f"{BUCKET}/wds"))

    # report: of the release and of the latest run, written under <output_root>/reports on S3
    assert ciep(["report", "s3rel", "--kind", "release", *common]) == 0
    page = fs.cat_file(f"{BUCKET}/runs/reports/s3rel.html").decode()
    assert "data:image/jpeg;base64," in page  # contact-sheet strips made from the images on S3
    assert ciep(["report", *common]) == 0
    assert fs.exists(f"{BUCKET}/runs/reports/{run_id}.html")
    # a run given by its URL is reached with the same options
    local = tmp_path / "run.html"
    assert ciep(["report", f"s3://{BUCKET}/runs/{run_id}", "--out", str(local), *common]) == 0
    assert local.stat().st_size > 1000


def test_report_reads_the_run_images_through_the_location(s3_output):
    fs, config, run_id = s3_output
    from pipeline.config import load_config
    from publish.report import load_target

    cfg = load_config(config)
    out = Location(cfg.run.output_root, dict(cfg.run.storage_options))
    data = load_target(run_id, out, out.join("releases"), "run")
    assert data.kind == "run" and data.items
    for item in data.items[:3]:
        for url in (item.s, item.r, item.t):
            assert url and url.startswith(f"s3://{BUCKET}/runs/{run_id}/")
            assert data.read(url) == fs.cat_file(url)
