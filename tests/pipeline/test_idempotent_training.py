"""Issue 11 case 10: rerunning a finished multi-round run never retrains an adapter (its weights, checkpoints and
`trained_on` lineage row stay as they were), and checkpoint files are written atomically through fsspec with the
run's storage options (a real moto S3 server on 127.0.0.1 reached only through those options)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from core.location import Location
from manifests.query import connect
from manifests.store import ManifestStore
from pipeline.config import load_config
from pipeline.rounds import adapter_url
from pipeline.run_idi import run_idi
from stages.eadapter import storage
from stages.eadapter.tiny import build_tiny_sd
from tests.conftest import london_identities, make_corpus
from tests.s3_server import moto_s3


def _files(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_rerun_of_a_finished_two_round_run_does_not_retrain(tmp_path: Path, ray_session):
    corpus = make_corpus(tmp_path / "corpus", london_identities()[:3])
    base = build_tiny_sd(tmp_path / "tiny_sd")
    cfg = load_config(overrides=[
        f"corpus.root={corpus}", f"run.output_root={tmp_path / 'runs'}", "run.name=idem", "run.rounds=2",
        "expression_transfer.backend=eadapter", f"expression_transfer.base_model={base}",
        "expression_transfer.bootstrap_backend=landmark_warp",
        "expression_transfer.num_inference_steps=2", "expression_transfer.guidance_scale=1.0",
        "identity_swap.target_landmarks_fallback=true",
        "train.steps=2", "train.batch_size=2", "train.checkpoint_every=2", "train.resolution=32",
    ])
    first = run_idi(cfg)
    url = first["timing"]["run_url"]
    store = ManifestStore.open(url)
    lineage = connect(store).execute("select * from lineage where kind = 'trained_on'").fetchall()
    assert len(lineage) == 1
    adapter_dir = Path(adapter_url(url, 1))
    before = _files(adapter_dir)
    assert any(k.startswith("adapter/") for k in before) and any(k.startswith("checkpoints/") for k in before)
    second = run_idi(cfg)
    assert second["timing"]["items"] == 0
    assert _files(adapter_dir) == before, "the adapter, its checkpoints and log are untouched"
    assert connect(ManifestStore.open(url)).execute(
        "select * from lineage where kind = 'trained_on'").fetchall() == lineage
    assert not list(adapter_dir.rglob("*.tmp-*"))


def test_checkpoint_files_are_written_atomically(tmp_path: Path, monkeypatch):
    target = tmp_path / "ckpt" / "state.json"
    storage.write_bytes(str(target), b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the write fails part-way: the old file must stay whole
    with pytest.raises(OSError, match="No space"):
        storage.write_bytes(str(target), b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert list(target.parent.iterdir()) == [target], "no temp file left behind"
    storage.write_bytes(str(target), b"new")
    assert target.read_bytes() == b"new"


@pytest.mark.slow
def test_checkpoint_writes_use_the_runs_storage_options(tmp_path: Path, monkeypatch):
    import s3fs

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    with moto_s3("ckpt", key="AKIAIDEMFAKE", secret="fake/secret") as server:
        s3fs.S3FileSystem.clear_instance_cache()
        latest = Location("s3://ckpt/run/adapters/round-1/checkpoints/latest.json", server.opts)
        storage.write_bytes(latest, b'{"checkpoint": "x"}')
        assert storage.exists(latest)
        assert storage.read_bytes(latest) == b'{"checkpoint": "x"}'
        assert os.environ.get("AWS_ACCESS_KEY_ID") is None
