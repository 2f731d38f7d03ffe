"""`ciep export <release> --format hf-parquet|webdataset|imagefolder`: a release in trainers' formats.

Every writer streams: it reads the release manifest in record batches (pyarrow dataset), reads each
triple's three images from the release, writes them out and lets them go, so memory is bounded by one
batch and one output shard's buffers, not by the size of the release.

- hf-parquet:  <out>/data/<split>-<nnnnn>.parquet with images embedded as `datasets` Image structs (the
               `huggingface` schema metadata carries the features) and <out>/README.md, the release's card,
               whose `configs` name the data files: `datasets.load_dataset("<out>")` or
               `load_dataset("parquet", data_files={"train": "<out>/data/train-*.parquet"})`.
- webdataset:  <out>/<split>/<split>-<nnnnnn>.tar with {key}.source.jpg, .reference.jpg, .target.jpg, .json.
- imagefolder: <out>/<split>/{target,source,reference}/<key>.png, <out>/<split>/metadata.jsonl (diffusers /
               `load_dataset("imagefolder")`: `file_name` is the target, `source_file_name`,
               `reference_file_name`, `text`) and <out>/<split>/ip_adapter.json, the IP-Adapter tutorial's
               JSON list ({"image_file", "text", ...}).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from core.config import StorageOptions
from core.location import Location
from manifests.scan import count_rows, iter_batches, release_arrow_memory
from manifests.store import atomic_write_bytes
from publish.release import CARD, Release, ReleaseError, open_release, open_release_url
from publish.release_schema import EXPORT_COLUMNS, IMAGE_ROLES, export_arrow_schema

log = logging.getLogger(__name__)

FORMATS = ("hf-parquet", "webdataset", "imagefolder")
_META_COLUMNS = [n for n, k in EXPORT_COLUMNS if k != "image"]
# PNG bytes are compressed already: store them as they are, zstd for the rest.
_HF_COMPRESSION = {**{n: "zstd" for n in _META_COLUMNS}, "s_embedding.list.element": "zstd",
                   **{f"{c}.{f}": ("none" if f == "bytes" else "zstd") for c in IMAGE_ROLES.values()
                      for f in ("bytes", "path")}}
_MANIFEST_COLUMNS = sorted(set(_META_COLUMNS) | {f"{k}_file" for k in IMAGE_ROLES} | {"split"})


@dataclass
class ExportStats:
    format: str
    out: str
    triples: int = 0
    images: int = 0
    bytes_written: int = 0
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def triples_per_s(self) -> float:
        return self.triples / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / 1e6 / self.seconds if self.seconds else 0.0


def caption(expression: str | None) -> str:
    return f"a photo of a face, {expression} expression" if expression else "a photo of a face"


def iter_split(release: Release, split: str, batch_size: int) -> Iterator[list[dict]]:
    """The release's triples of one split, as lists of row dicts, one manifest batch at a time."""
    flt = pads.field("split") == split
    for batch in iter_batches(release.store, "triples", columns=_MANIFEST_COLUMNS, filter=flt,
                              batch_size=batch_size):
        if batch.num_rows:  # a filtered batch can come back empty
            rows = batch.to_pylist()
            del batch
            yield rows
            release_arrow_memory()


def _nonempty_splits(release: Release) -> list[str]:
    counts = release.info.get("stats", {}).get("splits", {})
    return [s for s in release.splits if (counts[s]["triples"] if s in counts else
                                          count_rows(release.store, "triples", pads.field("split") == s, ["split"]))]


class _CountingWriter(io.RawIOBase):
    """A write-only stream that counts what passes through to an fsspec file."""

    def __init__(self, fh: io.IOBase) -> None:
        self.fh, self.n = fh, 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.fh.write(b)
        self.n += len(b)
        return len(b)


# -- hf-parquet ------------------------------------------------------------------------------------------
def write_hf_parquet(release: Release, out: str, *, batch_size: int = 64, max_shard_rows: int = 2000,
                     max_shard_bytes: int = 512 * 2**20, storage_options: dict | None = None) -> ExportStats:
    """Parquet shards per split with images embedded (PNG bytes in `datasets` Image structs)."""
    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    root = root.rstrip("/")
    stats = ExportStats("hf-parquet", out)
    schema = export_arrow_schema()
    for split in _nonempty_splits(release):
        shard, writer, fh, counter, rows_in_shard = 0, None, None, None, 0

        def close() -> None:
            nonlocal writer, fh, counter
            if writer is not None:
                writer.close()
                fh.close()
                stats.bytes_written += counter.n
            writer = fh = counter = None

        for batch_rows in iter_split(release, split, batch_size):
            while batch_rows:
                if writer is None or counter is None or rows_in_shard >= max_shard_rows or counter.n >= max_shard_bytes:
                    close()
                    path = f"{root}/data/{split}-{shard:05d}.parquet"
                    fs.makedirs(f"{root}/data", exist_ok=True)
                    fh = fs.open(path, "wb")
                    counter = _CountingWriter(fh)
                    # No dictionary for image bytes: PNGs rarely repeat and a dictionary page would hold them all.
                    writer = pq.ParquetWriter(counter, schema, compression=_HF_COMPRESSION,
                                              use_dictionary=_META_COLUMNS)
                    stats.files.append(path)
                    shard, rows_in_shard = shard + 1, 0
                take = max_shard_rows - rows_in_shard
                rows, batch_rows = batch_rows[:take], batch_rows[take:]
                cols = {n: [r[n] for r in rows] for n in _META_COLUMNS}
                for key, col in IMAGE_ROLES.items():
                    cols[col] = [{"bytes": release.read_bytes(r[f"{key}_file"]),
                                  "path": r[f"{key}_file"].rsplit("/", 1)[-1]} for r in rows]
                # One row group per batch: bounded memory, and ~batch_size images per group as HF suggests.
                writer.write_table(pa.Table.from_pydict(cols, schema=schema), row_group_size=len(rows))
                rows_in_shard += len(rows)
                stats.triples += len(rows)
                stats.images += 3 * len(rows)
        close()
    card = release.read_bytes(CARD)
    atomic_write_bytes(fs, f"{root}/README.md", card)
    stats.bytes_written += len(card)
    return stats


# -- webdataset ------------------------------------------------------------------------------------------
def to_jpeg(png: bytes, quality: int) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="JPEG", quality=quality)
        return buf.getvalue()


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    info.uname = info.gname = "ciep"
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(release: Release, out: str, *, batch_size: int = 64, max_shard_rows: int = 1000,
                     jpeg_quality: int = 95, storage_options: dict | None = None) -> ExportStats:
    """POSIX tar shards per split: {key}.source.jpg, .reference.jpg, .target.jpg and {key}.json."""
    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    root = root.rstrip("/")
    stats = ExportStats("webdataset", out)
    mtime = 0.0  # fixed: the same release exports to the same bytes
    for split in _nonempty_splits(release):
        shard, tar, fh, counter, rows_in_shard = 0, None, None, None, 0

        def close() -> None:
            nonlocal tar, fh, counter
            if tar is not None:
                tar.close()
                fh.close()
                stats.bytes_written += counter.n
            tar = fh = counter = None

        for rows in iter_split(release, split, batch_size):
            for r in rows:
                if tar is None or rows_in_shard >= max_shard_rows:
                    close()
                    path = f"{root}/{split}/{split}-{shard:06d}.tar"
                    fs.makedirs(f"{root}/{split}", exist_ok=True)
                    fh = fs.open(path, "wb")
                    counter = _CountingWriter(fh)
                    tar = tarfile.open(fileobj=counter, mode="w|", format=tarfile.USTAR_FORMAT)
                    stats.files.append(path)
                    shard, rows_in_shard = shard + 1, 0
                key = r["triple_id"]
                for k, col in IMAGE_ROLES.items():
                    _tar_add(tar, f"{key}.{col}.jpg", to_jpeg(release.read_bytes(r[f"{k}_file"]), jpeg_quality),
                             mtime)
                meta = {n: r[n] for n in _META_COLUMNS} | {"split": split, "text": caption(r["expression"])}
                _tar_add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode(), mtime)
                rows_in_shard += 1
                stats.triples += 1
                stats.images += 3
        close()
    return stats


# -- imagefolder -----------------------------------------------------------------------------------------
def write_imagefolder(release: Release, out: str, *, batch_size: int = 64,
                      storage_options: dict | None = None) -> ExportStats:
    """diffusers-style folders: images per role, metadata.jsonl and the IP-Adapter tutorial's JSON list."""
    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    root = root.rstrip("/")
    stats = ExportStats("imagefolder", out)
    for split in _nonempty_splits(release):
        base = f"{root}/{split}"
        for col in IMAGE_ROLES.values():
            fs.makedirs(f"{base}/{col}", exist_ok=True)
        with fs.open(f"{base}/metadata.jsonl", "wb") as meta_fh, fs.open(f"{base}/ip_adapter.json", "wb") as ip_fh:
            stats.files += [f"{base}/metadata.jsonl", f"{base}/ip_adapter.json"]
            ip_fh.write(b"[")
            first = True
            for rows in iter_split(release, split, batch_size):
                for r in rows:
                    key = r["triple_id"]
                    names = {}
                    for k, col in IMAGE_ROLES.items():
                        data = release.read_bytes(r[f"{k}_file"])
                        names[col] = f"{col}/{key}.png"
                        with fs.open(f"{base}/{names[col]}", "wb") as img_fh:
                            img_fh.write(data)
                        stats.bytes_written += len(data)
                    text = caption(r["expression"])
                    meta = {"file_name": names["target"], "source_file_name": names["source"],
                            "reference_file_name": names["reference"], "text": text,
                            **{n: r[n] for n in _META_COLUMNS}}
                    line = (json.dumps(meta, sort_keys=False) + "\n").encode()
                    meta_fh.write(line)
                    ip = {"image_file": names["target"], "text": text, "source_file": names["source"],
                          "reference_file": names["reference"], "triple_id": key, "expression": r["expression"]}
                    item = (b"\n " if first else b",\n ") + json.dumps(ip).encode()
                    ip_fh.write(item)
                    stats.bytes_written += len(line) + len(item)
                    first = False
                    stats.triples += 1
                    stats.images += 3
            ip_fh.write(b"\n]\n")
    return stats


WRITERS: dict[str, Callable[..., ExportStats]] = {
    "hf-parquet": write_hf_parquet,
    "webdataset": write_webdataset,
    "imagefolder": write_imagefolder,
}


def export_release(release: Release, fmt: str, out: Location | str, *, overwrite: bool = False,
                   storage_options: StorageOptions | None = None, **options: int) -> ExportStats:
    """Write `release` as `fmt` under `out` (which must not exist or be empty unless overwrite)."""
    if fmt not in WRITERS:
        raise ReleaseError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    target = Location.of(out, storage_options)
    fs, root = target.fs, target.path
    if fs.exists(root) and fs.ls(root):
        if not overwrite:
            raise ReleaseError(f"{target.url} exists and is not empty; pass --overwrite or choose another --out")
        fs.rm(root, recursive=True)
    started = time.perf_counter()
    stats = WRITERS[fmt](release, target.url, storage_options=target.storage_options, **options)
    stats.seconds = time.perf_counter() - started
    return stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ciep export", description=__doc__.splitlines()[0])
    p.add_argument("release", help="release name (under --releases-root) or a release folder/URL")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", help="output folder or URL (default <output-root>/exports/<release>/<format>)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--batch-size", type=int, default=64, help="triples read per manifest batch")
    p.add_argument("--shard-rows", type=int, help="triples per output shard (hf-parquet 2000, webdataset 1000)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="webdataset JPEG quality")
    p.add_argument("--config", help="config whose run.output_root is used (default configs/demo.yaml)")
    p.add_argument("--output-root", help="folder or URL holding runs (overrides the config)")
    p.add_argument("--releases-root", help="folder or URL holding releases (default <output-root>/releases)")
    return p


def resolve_release(name_or_url: str, releases_root: Location | str) -> Release:
    """A release by name under releases_root, or by its own folder/URL (reached with releases_root's options)."""
    root = Location.of(releases_root)
    if "/" in name_or_url or "://" in name_or_url:
        return open_release_url(name_or_url, root.storage_options)
    return open_release(root, name_or_url)


def run_cli(args: argparse.Namespace, output_root: Location, releases_root: Location) -> int:
    """Run a parsed `ciep export` (wired in pipeline/cli.py) against these storage locations."""
    options: dict[str, int] = {"batch_size": args.batch_size}
    if args.shard_rows and args.format != "imagefolder":
        options["max_shard_rows"] = args.shard_rows
    if args.format == "webdataset":
        options["jpeg_quality"] = args.jpeg_quality
    try:
        release = resolve_release(args.release, releases_root)
        out = Location.of(args.out, output_root.storage_options) if args.out else \
            output_root.join("exports", release.name, args.format)
        stats = export_release(release, args.format, out, overwrite=args.overwrite, storage_options=None,
                               **options)
    except FileNotFoundError as err:  # ReleaseNotFoundError: no such release, same status as a missing run
        print(f"ciep export: {err}", file=sys.stderr)
        return 5
    except ReleaseError as err:
        print(f"ciep export: {err}", file=sys.stderr)
        return 1
    print(f"exported {release.name} as {stats.format}: {stats.triples} triples, {len(stats.files)} files, "
          f"{stats.bytes_written / 1e6:.1f} MB in {stats.seconds:.1f}s ({stats.triples_per_s:.1f} triples/s, "
          f"{stats.mb_per_s:.1f} MB/s)\n  -> {out.url}")
    return 0

