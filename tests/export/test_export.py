"""Exports of a real release, read back by the libraries trainers use: `datasets` (hf-parquet with Image
features, imagefolder with metadata.jsonl), `webdataset` (tar shards), and the IP-Adapter JSON list."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from pipeline.cli import main as ciep
from publish.export import export_release
from publish.release import ReleaseError

datasets = pytest.importorskip("datasets")


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
    counts = Counter(Path(f).name.split("-")[0] for f in stats.files)
    expected = {s: len(v) for s, v in _by_split(release).items()}
    assert counts == {s: -(-n // 2) for s, n in expected.items()}
    import pyarrow.parquet as pq
    assert sum(pq.read_metadata(f).num_rows for f in stats.files) == sum(expected.values())


def test_webdataset_tars_read_back(release, tmp_path: Path):
    wds = pytest.importorskip("webdataset")
    out = tmp_path / "wds"
    stats = export_release(release, "webdataset", str(out), max_shard_rows=3)
    expected = _by_split(release)
    for split, rows in expected.items():
        urls = sorted(str(p) for p in (out / split).glob("*.tar"))
        assert len(urls) == -(-len(rows) // 3)
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
