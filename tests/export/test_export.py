"""Exports of a real release, read back by the libraries trainers use: `datasets` (hf-parquet with Image
features, imagefolder with metadata.jsonl), `webdataset` (tar shards), and the IP-Adapter JSON list."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
from PIL import Image

from pipeline.cli import main as ciep
from publish.export import export_release
from publish.release.read import ReleaseError


def _by_split(release) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for r in release.store.read_table("triples").to_pylist():
        out.setdefault(r["split"], {})[r["triple_id"]] = r
    return out


def _png_sha(im: Image.Image) -> str:
    return hashlib.sha256(im.tobytes()).hexdigest()


def test_hf_parquet_loads_with_image_features(release, tmp_path: Path):
    out = tmp_path / "hf"
    stats = export_release(release, "hf-parquet", str(out))
    expected = _by_split(release)
    assert stats.triples == sum(len(v) for v in expected.values()) and (out / "README.md").exists()
    cache = str(tmp_path / "hf-cache")
    # 1) plain parquet files, 2) the export folder itself (its README's configs name the data files).
    files = {s: sorted(str(p) for p in (out / "data").glob(f"{s}-*.parquet")) for s in expected}
    by_files = datasets.load_dataset("parquet", data_files=files, cache_dir=cache)
    by_card = datasets.load_dataset(str(out), cache_dir=cache)
    for ds in (by_files, by_card):
        assert set(ds) == set(expected)
        for split, rows in expected.items():
            d = ds[split]
            for col in ("source", "reference", "target"):
                assert isinstance(d.features[col], datasets.Image)
            assert d.features["id_sim_rt"].dtype == "float32"
            assert sorted(d["triple_id"]) == sorted(rows)
    row = by_card[next(iter(expected))][0]
    src = expected[next(iter(expected))][row["triple_id"]]
    for col, key in (("source", "s"), ("reference", "r"), ("target", "t")):
        im = row[col]
        assert isinstance(im, Image.Image) and im.size == (256, 256)
        assert hashlib.sha256(Path(release.root, src[f"{key}_file"]).read_bytes()).hexdigest() == src[f"{key}_sha256"]
        with Image.open(Path(release.root, src[f"{key}_file"])) as orig:
            assert _png_sha(im.convert("RGB")) == _png_sha(orig.convert("RGB"))  # lossless
    assert row["id_sim_rt"] == pytest.approx(src["id_sim_rt"]) and len(row["s_embedding"]) == 128


def test_hf_parquet_rotates_shards(release, tmp_path: Path):
    stats = export_release(release, "hf-parquet", str(tmp_path / "hf"), max_shard_rows=2, batch_size=2)
    counts = Counter(Path(f).name.split("-")[0] for f in stats.files if f.endswith(".parquet"))
    expected = {s: len(v) for s, v in _by_split(release).items()}
    assert counts == {s: -(-n // 2) for s, n in expected.items()}
    import pyarrow.parquet as pq
    assert sum(pq.read_metadata(f).num_rows for f in stats.files if f.endswith(".parquet")) == sum(expected.values())


def test_webdataset_tars_read_back(release, tmp_path: Path):
    import webdataset as wds
    out = tmp_path / "wds"
    stats = export_release(release, "webdataset", str(out), max_shard_rows=3)
    expected = _by_split(release)
    for split, rows in expected.items():
        urls = sorted(str(p) for p in (out / split).glob("*.tar"))
        assert len(urls) == max(-(-len(rows) // 3), min(2, len(rows)))  # at least 2: one per DataLoader worker
        seen = []
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil"):
            for col in ("source", "reference", "target"):
                assert isinstance(sample[f"{col}.jpg"], Image.Image) and sample[f"{col}.jpg"].size == (256, 256)
            meta = sample["json"]
            assert meta["triple_id"] == sample["__key__"] and meta["split"] == split
            assert meta["r_sha256"] == rows[meta["triple_id"]]["r_sha256"] and meta["text"]
            seen.append(meta["triple_id"])
        assert sorted(seen) == sorted(rows)
    assert stats.triples == sum(len(v) for v in expected.values())


def test_imagefolder_metadata_and_ip_adapter_list(release, tmp_path: Path):
    out = tmp_path / "imf"
    export_release(release, "imagefolder", str(out))
    expected = _by_split(release)
    for split, rows in expected.items():
        lines = [json.loads(x) for x in (out / split / "metadata.jsonl").read_text().splitlines()]
        assert sorted(m["triple_id"] for m in lines) == sorted(rows)
        for m in lines:
            for key in ("file_name", "source_file_name", "reference_file_name"):
                assert (out / split / m[key]).is_file()
            assert (out / split / m["file_name"]).read_bytes() == Path(release.root,
                                                                        rows[m["triple_id"]]["t_file"]).read_bytes()
        ip = json.loads((out / split / "ip_adapter.json").read_text())
        assert isinstance(ip, list) and len(ip) == len(rows)
        assert all((out / split / item["image_file"]).is_file() and item["text"] for item in ip)
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert set(ds) == set(expected)
    split = next(iter(expected))
    row = ds[split][0]
    assert {"image", "source", "reference", "text"} <= set(row)
    assert all(isinstance(row[c], Image.Image) for c in ("image", "source", "reference"))


def test_export_refuses_a_nonempty_destination_and_cli_works(release, finished_run, tmp_path: Path, capsys):
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ReleaseError, match="not empty"):
        export_release(release, "webdataset", str(out))
    assert ciep(["export", release.name, "--format", "hf-parquet", "--output-root", finished_run.output_root,
                 "--out", str(tmp_path / "cli")]) == 0
    assert "triples/s" in capsys.readouterr().out
    assert list((tmp_path / "cli" / "data").glob("*.parquet"))
    assert ciep(["export", release.name, "--format", "hf-parquet", "--output-root", finished_run.output_root,
                 "--out", str(tmp_path / "cli")]) == 1


def test_jpeg_conversion_keeps_the_picture(release):
    from publish.export import to_jpeg
    rel = release.store.read_table("triples", ["r_file"]).column("r_file")[0].as_py()
    png = release.read_bytes(rel)
    with Image.open(io.BytesIO(to_jpeg(png, 95))) as jpg, Image.open(io.BytesIO(png)) as orig:
        import numpy as np
        diff = np.abs(np.asarray(jpg.convert("RGB"), float) - np.asarray(orig.convert("RGB"), float)).mean()
        assert jpg.format == "JPEG" and diff < 4


# -- trainer fit: caption, landmarks and face mask in every format; DataLoader workers --------------------
def _mask_ok(mask: Image.Image, target_size: tuple[int, int]) -> None:
    import numpy as np
    a = np.asarray(mask.convert("L"))
    assert mask.size == target_size and set(np.unique(a)) <= set(range(256))
    assert 0.1 < (a > 127).mean() < 0.9  # a face, not an empty or full frame


def test_every_format_carries_caption_landmarks_and_face_mask(release, tmp_path: Path):
    from publish.export import caption
    expected = {tid: r for rows in _by_split(release).values() for tid, r in rows.items()}
    assert all(len(r["t_landmarks68"]) == 136 and len(r["s_landmarks68"]) == 136 for r in expected.values())
    export_release(release, "hf-parquet", str(tmp_path / "hf"))
    ds = datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "hf-cache"))
    for split in ds:
        assert isinstance(ds[split].features["target_mask"], datasets.Image)
        for row in ds[split]:
            src = expected[row["triple_id"]]
            assert row["text"] == caption(src["expression"])
            assert row["t_landmarks68"] == pytest.approx(src["t_landmarks68"])
            _mask_ok(row["target_mask"], row["target"].size)
    import webdataset as wds
    export_release(release, "webdataset", str(tmp_path / "wds"))
    urls = sorted(str(p) for p in (tmp_path / "wds").glob("*/*.tar"))
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
        meta = sample["json"]
        assert meta["text"] == caption(expected[meta["triple_id"]]["expression"])
        assert meta["s_landmarks68"] == pytest.approx(expected[meta["triple_id"]]["s_landmarks68"])
        _mask_ok(sample["target_mask.png"], sample["target.jpg"].size)
    export_release(release, "imagefolder", str(tmp_path / "imf"))
    imf = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "imf"), cache_dir=str(tmp_path / "hf-cache"))
    for split in imf:
        row = imf[split][0]
        assert row["text"] == caption(expected[row["triple_id"]]["expression"])
        _mask_ok(row["target_mask"], row["image"].size)
        assert len(row["t_landmarks68"]) == 136


def test_small_webdataset_split_loads_with_two_dataloader_workers(tmp_path: Path):
    """A 3-triple release: by default 2 tars per split, so DataLoader(num_workers=2) finds samples in each
    worker (with one tar, webdataset raises "No samples found" in the idle worker)."""
    import torch
    import webdataset as wds

    from manifests.synthetic import write_synthetic_run
    from publish.release.create import create_release
    write_synthetic_run(str(tmp_path / "run"), identities=3, candidates_per_round=12, all_accepted=True)
    rel = create_release(str(tmp_path / "run"), "tiny", str(tmp_path / "rel"), splits={"train": 1.0})
    n = rel.info["stats"]["triples"]

    def load(out: Path) -> list[str]:
        urls = sorted(str(p) for p in out.glob("train/*.tar"))
        ds = wds.WebDataset(urls, shardshuffle=False).to_tuple("__key__")
        return sorted(key for (key,) in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2))

    export_release(rel, "webdataset", str(tmp_path / "two"))
    assert len(list((tmp_path / "two" / "train").glob("*.tar"))) == 2
    assert load(tmp_path / "two") == sorted(r["triple_id"] for r in rel.store.read_table("triples").to_pylist())
    assert len(load(tmp_path / "two")) == n
    export_release(rel, "webdataset", str(tmp_path / "one"), min_shards=1)
    with pytest.raises(ValueError, match="No samples found"):
        load(tmp_path / "one")


# -- parallel and resumable -------------------------------------------------------------------------------
def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["hf-parquet", "webdataset", "imagefolder"])
def test_ray_export_writes_the_same_bytes_as_the_local_one(release, ray_session, tmp_path: Path, fmt):
    from pipeline.publish_on_ray import ray_shard_mapper
    here = export_release(release, fmt, str(tmp_path / "here"), max_shard_rows=2)
    on_ray = export_release(release, fmt, str(tmp_path / "ray"), max_shard_rows=2, map_shards=ray_shard_mapper())
    assert on_ray.shards == here.shards > 2 and on_ray.triples == here.triples
    assert _snapshot(tmp_path / "ray") == _snapshot(tmp_path / "here")


def _first_new_image(release, specs, index: int) -> str:
    """A release image (relative path) that shard `index` reads and no shard before it does."""
    from publish.writers import read_shard_rows
    seen = {r[f"{k}_file"] for spec in specs[:index] for r in read_shard_rows(release, spec) for k in "srt"}
    return next(f for r in read_shard_rows(release, specs[index]) for k in "srt"
                if (f := r[f"{k}_file"]) not in seen)


def test_a_killed_export_resumed_gives_the_same_output(tmp_path: Path):
    """SIGKILL `ciep export` inside its fourth shard, three shards done: an image that no earlier shard reads is
    swapped for a named pipe nobody writes, so the exporter stops there (blocked opening it) whatever the machine's
    speed, and is killed once the fourth shard's tar is open. The same command again writes only the rest, and the
    result equals an export that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from manifests.synthetic import write_synthetic_run
    from publish.release.create import create_release
    from publish.writers import WebDatasetWriter, plan_shards
    from tests.conftest import REPO
    write_synthetic_run(str(tmp_path / "run"), identities=40, candidates_per_round=400, all_accepted=True,
                        image_size=256)
    rel = create_release(str(tmp_path / "run"), "big", str(tmp_path / "rel"), splits={"train": 1.0})
    clean = export_release(rel, "webdataset", str(tmp_path / "clean"), max_shard_rows=10)
    stall = Path(rel.path(_first_new_image(rel, plan_shards(rel, 10, WebDatasetWriter.min_shards), 3)))
    image = stall.read_bytes()
    stall.unlink()
    os.mkfifo(stall)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline.cli", "export", str(Path(rel.root)), "--format", "webdataset",
           "--out", str(out), "--shard-rows", "10"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "CIEP_PROGRESS_BARS": "0"}
    proc = subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    markers, fourth = out / ".ciep" / "shards", out / "train" / "train-000003.tar"
    try:
        # the exporter cannot get past the pipe: once shard 3's tar exists it is in that shard, and stays there
        deadline = time.monotonic() + 120
        while not fourth.exists():
            assert proc.poll() is None, f"the export ended (rc {proc.returncode}) before the stalled image: " \
                                        + proc.stderr.read().decode(errors="replace")[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the export never reached its fourth shard"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stall.unlink()
        stall.write_bytes(image)
    assert proc.returncode == -signal.SIGKILL
    done_before = len(list(markers.glob("*.json")))
    assert done_before == 3 < clean.shards and not (out / ".ciep" / "done.json").exists()
    resumed = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done_before} of {clean.shards} shards done before" in resumed.stdout
    # The dataset is the same; .ciep/ (markers, bookkeeping) may also hold a marker's temp file the kill left.
    data = {k: v for k, v in _snapshot(out).items() if not k.startswith(".ciep/")}
    assert data == {k: v for k, v in _snapshot(tmp_path / "clean").items() if not k.startswith(".ciep/")}
    # A finished export is not redone: the same command is refused (use --overwrite).
    assert subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True).returncode == 1
