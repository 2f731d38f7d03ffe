"""Issue 11 case 10: checkpoint files are written atomically through fsspec with the run's storage options (a
real moto S3 server on 127.0.0.1 reached only through those options). That a rerun of a finished multi-round run
never retrains is checked on the two-round run of tests/pipeline/test_rounds_eadapter.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.location import Location
from stages.eadapter import storage
from tests.s3_server import moto_s3


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
