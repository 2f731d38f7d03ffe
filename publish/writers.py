"""Export writers: one class per format behind one small interface, each writing one shard at a time.

An export is planned as numbered shards per split (`plan_shards`): each shard is a fixed run of the release
manifest's rows, so a shard's content depends only on the release and the options. A writer turns one
shard's rows into its output file(s) and then writes the shard's done-marker with its stats
(`<out>/.ciep/shards/<split>-<nnnnn>.json`); a shard whose marker exists is skipped, so a killed export run
again finishes the same output. `finish` writes what spans shards (README, metadata.jsonl) once all are done.
Writers never touch Ray: publish/export.py runs shards here, pipeline/publish_on_ray.py on Ray Data.

- hf-parquet:  data/<split>-<nnnnn>.parquet, images as `datasets` Image structs, + README.md (the card)
- webdataset:  <split>/<split>-<nnnnnn>.tar with {key}.source.jpg/.reference.jpg/.target.jpg/.target_mask.png/.json
- imagefolder: <split>/{target,source,reference,target_mask}/<key>.png, <split>/metadata.jsonl, ip_adapter.json
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.location import Location
from manifests.integrity import read_shard
from manifests.store import atomic_write_bytes
from publish.release.read import CARD, Release
from publish.release.schema import DERIVED_COLUMNS, EXPORT_COLUMNS, IMAGE_ROLES, export_arrow_schema

STATE_DIR = ".ciep"  # datasets and webdataset loaders skip dot-folders
SHARDS_DIR = f"{STATE_DIR}/shards"
PARTS_DIR = f"{STATE_DIR}/parts"
META_COLUMNS = [n for n, k in EXPORT_COLUMNS if k != "image"]
_LANDMARK_COLUMNS = ("s_landmarks68", "t_landmarks68")
# Columns read from the release manifest (landmarks only from format 2 on).
_MANIFEST_COLUMNS = sorted((set(META_COLUMNS) - set(DERIVED_COLUMNS)) | {f"{k}_file" for k in IMAGE_ROLES} | {"split"})


def caption(expression: str | None) -> str:
    return f"a photo of a face, {expression} expression" if expression else "a photo of a face"


def face_mask_png(landmarks68: list[float] | None, size: tuple[int, int]) -> bytes | None:
    """T's face mask: the convex hull of its 68 landmarks filled white on black, 8-bit PNG (None without landmarks)."""
    if not landmarks68:
        return None
    from PIL import Image

    from stages.face.classic_swap import face_hull_mask

    width, height = size
    mask = face_hull_mask(np.asarray(landmarks68, np.float32).reshape(-1, 2), height, width)
    buf = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


def to_jpeg(png: bytes, quality: int) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="JPEG", quality=quality)
        return buf.getvalue()


# -- planning --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardSpec:
    """One output shard: rows [start, stop) of `split` in each listed manifest file, in order."""

    split: str
    index: int
    parts: tuple[tuple[str, int, int], ...]  # (manifest file path, first, stop) in the split's rows of that file

    @property
    def rows(self) -> int:
        return sum(stop - start for _, start, stop in self.parts)

    def to_json(self) -> str:
        return json.dumps([self.split, self.index, [list(p) for p in self.parts]])

    @classmethod
    def from_json(cls, text: str) -> ShardSpec:
        split, index, parts = json.loads(text)
        return cls(split, index, tuple((p[0], p[1], p[2]) for p in parts))


def plan_shards(release: Release, max_shard_rows: int, min_shards: int = 1) -> list[ShardSpec]:
    """Shards per split in manifest order: ceil(n / max_shard_rows) of them, at least min(min_shards, n),
    sizes as even as possible. Reads only the `split` column."""
    per_file: list[tuple[str, dict[str, int]]] = []
    totals: dict[str, int] = {}
    for path in release.store.committed_files("triples"):
        col = read_shard(release.fs, path, columns=["split"]).column("split")
        counts = {str(k): int(v) for k, v in zip(*_value_counts(col), strict=True)}
        per_file.append((path, counts))
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    specs: list[ShardSpec] = []
    for split in [s for s in release.splits if totals.get(s)] + sorted(set(totals) - set(release.splits)):
        n = totals[split]
        shards = max(-(-n // max_shard_rows), min(min_shards, n))
        sizes = [n // shards + (1 if i < n % shards else 0) for i in range(shards)]
        files = [(p, c[split]) for p, c in per_file if c.get(split)]
        fi, offset = 0, 0
        for index, size in enumerate(sizes):
            parts: list[tuple[str, int, int]] = []
            while size:
                path, avail = files[fi]
                take = min(size, avail - offset)
                parts.append((path, offset, offset + take))
                size -= take
                offset += take
                if offset == avail:
                    fi, offset = fi + 1, 0
            specs.append(ShardSpec(split, index, tuple(parts)))
    return specs


def _value_counts(col: pa.ChunkedArray) -> tuple[list, list]:
    vc = col.value_counts()
    return vc.field("values").to_pylist(), vc.field("counts").to_pylist()


def read_shard_rows(release: Release, spec: ShardSpec) -> list[dict]:
    """The manifest rows of one shard, with the derived columns (caption) filled in."""
    rows: list[dict] = []
    for path, start, stop in spec.parts:
        with release.fs.open(path, "rb") as fh:
            present = set(pq.ParquetFile(fh).schema_arrow.names)  # an older release lacks later columns
        t = read_shard(release.fs, path, columns=[c for c in _MANIFEST_COLUMNS if c in present])
        t = t.filter(pc.equal(t.column("split"), spec.split)).slice(start, stop - start)
        rows += t.to_pylist()
    for r in rows:
        r["text"] = caption(r["expression"])
        for c in _MANIFEST_COLUMNS:
            r.setdefault(c, None)
    return rows


# -- the interface ---------------------------------------------------------------------------------------
@dataclass
class ShardResult:
    split: str
    index: int
    triples: int = 0
    images: int = 0
    bytes_written: int = 0
    files: list[str] = field(default_factory=list)  # relative to the export root
    skipped: bool = False  # done by an earlier, interrupted export


class Writer(ABC):
    """Writes one format: `write_shard` per planned shard (any order, any process), then `finish` once."""

    format: ClassVar[str]
    default_shard_rows: ClassVar[int]
    min_shards: ClassVar[int] = 1

    def __init__(self, out: Location, **options: Any) -> None:
        self.out = out
        self.fs: fsspec.AbstractFileSystem = out.fs
        self.root = out.path
        self.options = options

    def marker_path(self, spec: ShardSpec) -> str:
        return f"{self.root}/{SHARDS_DIR}/{spec.split}-{spec.index:05d}.json"

    def done(self, spec: ShardSpec) -> ShardResult | None:
        try:
            return ShardResult(**{**json.loads(self.fs.cat_file(self.marker_path(spec))), "skipped": True})
        except FileNotFoundError:
            return None

    def run_shard(self, release: Release, spec: ShardSpec) -> ShardResult:
        """Write a shard unless its marker says it is done; the marker goes last."""
        if (prior := self.done(spec)) is not None:
            return prior
        result = self.write_shard(release, spec, read_shard_rows(release, spec))
        atomic_write_bytes(self.fs, self.marker_path(spec), json.dumps(asdict(result) | {"skipped": False},
                                                                       sort_keys=True).encode())
        return result

    def _open(self, rel: str) -> Any:
        self.fs.makedirs(posixpath.dirname(f"{self.root}/{rel}"), exist_ok=True)
        return self.fs.open(f"{self.root}/{rel}", "wb")

    @abstractmethod
    def write_shard(self, release: Release, spec: ShardSpec, rows: list[dict]) -> ShardResult:
        """Write this shard's output file(s) from its rows."""

    def finish(self, release: Release, results: list[ShardResult]) -> list[str]:
        """Files spanning shards, written once every shard is done (relative paths)."""
        return []


def _images(release: Release, row: dict) -> dict[str, bytes | None]:
    """A row's exported images: source, reference, target (release PNGs) and target_mask (or None)."""
    out: dict[str, bytes | None] = {col: release.read_bytes(row[f"{k}_file"]) for k, col in IMAGE_ROLES.items()}
    t = out["target"]
    out["target_mask"] = face_mask_png(row["t_landmarks68"], _png_size(t)) if row["t_landmarks68"] and t else None
    return out


# -- hf-parquet ------------------------------------------------------------------------------------------
_IMAGE_COLUMNS = [n for n, k in EXPORT_COLUMNS if k == "image"]
# PNG bytes are compressed already: store them as they are, zstd for the rest.
_HF_COMPRESSION = {**{n: "zstd" for n in META_COLUMNS},
                   **{f"{c}.list.element": "zstd" for c in ("s_embedding", *_LANDMARK_COLUMNS)},
                   **{f"{c}.{f}": ("none" if f == "bytes" else "zstd") for c in _IMAGE_COLUMNS
                      for f in ("bytes", "path")}}


class HfParquetWriter(Writer):
    """data/<split>-<nnnnn>.parquet with images embedded (`datasets` Image structs) and the card as README.md."""

    format = "hf-parquet"
    default_shard_rows = 1000

    def write_shard(self, release: Release, spec: ShardSpec, rows: list[dict]) -> ShardResult:
        batch_size = int(self.options.get("batch_size", 64))
        rel = f"data/{spec.split}-{spec.index:05d}.parquet"
        res = ShardResult(spec.split, spec.index, files=[rel])
        schema = export_arrow_schema()
        with self._open(rel) as fh:
            # No dictionary for image bytes: PNGs rarely repeat and a dictionary page would hold them all.
            writer = pq.ParquetWriter(fh, schema, compression=_HF_COMPRESSION, use_dictionary=META_COLUMNS)
            for at in range(0, len(rows), batch_size):
                chunk = rows[at:at + batch_size]
                cols: dict[str, list] = {n: [r[n] for r in chunk] for n in META_COLUMNS}
                for col in _IMAGE_COLUMNS:
                    cols[col] = []
                for r in chunk:
                    images = _images(release, r)
                    for col in _IMAGE_COLUMNS:
                        data = images[col]
                        name = f"{r['triple_id']}.{col}.png" if col == "target_mask" else \
                            r[f"{_ROLE_OF[col]}_file"].rsplit("/", 1)[-1]
                        cols[col].append(None if data is None else {"bytes": data, "path": name})
                    res.images += sum(1 for d in images.values() if d is not None)
                # One row group per batch: bounded memory, ~batch_size images per group as HF suggests.
                writer.write_table(pa.Table.from_pydict(cols, schema=schema), row_group_size=len(chunk))
                res.triples += len(chunk)
            writer.close()
        res.bytes_written = int(self.fs.size(f"{self.root}/{rel}"))
        return res

    def finish(self, release: Release, results: list[ShardResult]) -> list[str]:
        atomic_write_bytes(self.fs, f"{self.root}/README.md", release.read_bytes(CARD))
        return ["README.md"]


_ROLE_OF = {col: k for k, col in IMAGE_ROLES.items()}


# -- webdataset ------------------------------------------------------------------------------------------
def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: the same release, the same bytes
    info.uname = info.gname = "ciep"
    tar.addfile(info, io.BytesIO(data))


class WebDatasetWriter(Writer):
    """POSIX tar shards per split: {key}.source.jpg, .reference.jpg, .target.jpg, .target_mask.png, .json.

    At least `min_shards` (default 2) tars per split (when it has that many triples): a `DataLoader` with
    `num_workers=N` hands each worker whole shards, and webdataset raises "No samples found" in a worker
    that gets none; so a split needs at least N shards for N workers."""

    format = "webdataset"
    default_shard_rows = 1000
    min_shards = 2

    def write_shard(self, release: Release, spec: ShardSpec, rows: list[dict]) -> ShardResult:
        quality = int(self.options.get("jpeg_quality", 95))
        rel = f"{spec.split}/{spec.split}-{spec.index:06d}.tar"
        res = ShardResult(spec.split, spec.index, files=[rel])
        with self._open(rel) as fh, tarfile.open(fileobj=fh, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for r in rows:
                key = r["triple_id"]
                images = _images(release, r)
                for col in IMAGE_ROLES.values():
                    data = images[col]
                    assert data is not None
                    _tar_add(tar, f"{key}.{col}.jpg", to_jpeg(data, quality))
                if (mask := images["target_mask"]) is not None:
                    _tar_add(tar, f"{key}.target_mask.png", mask)
                meta = {n: r[n] for n in META_COLUMNS} | {"split": spec.split}
                _tar_add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
                res.triples += 1
                res.images += sum(1 for d in images.values() if d is not None)
        res.bytes_written = int(self.fs.size(f"{self.root}/{rel}"))
        return res


# -- imagefolder -----------------------------------------------------------------------------------------
class ImageFolderWriter(Writer):
    """diffusers-style folders: images per role, metadata.jsonl (`file_name` is the target, `*_file_name` the
    others, which `datasets` loads as image columns) and the IP-Adapter tutorial's JSON list."""

    format = "imagefolder"
    default_shard_rows = 1000

    def write_shard(self, release: Release, spec: ShardSpec, rows: list[dict]) -> ShardResult:
        res = ShardResult(spec.split, spec.index)
        meta_lines, ip_items = [], []
        for r in rows:
            key = r["triple_id"]
            names: dict[str, str] = {}
            for col, data in _images(release, r).items():
                if data is None:
                    continue
                names[col] = f"{col}/{key}.png"
                with self._open(f"{spec.split}/{names[col]}") as fh:
                    fh.write(data)
                res.bytes_written += len(data)
                res.images += 1
            meta = {"file_name": names["target"], "source_file_name": names["source"],
                    "reference_file_name": names["reference"],
                    **({"target_mask_file_name": names["target_mask"]} if "target_mask" in names else {}),
                    **{n: r[n] for n in META_COLUMNS}}
            meta_lines.append(json.dumps(meta))
            ip_items.append(json.dumps({"image_file": names["target"], "text": r["text"],
                                        "source_file": names["source"], "reference_file": names["reference"],
                                        "triple_id": key, "expression": r["expression"]}))
            res.triples += 1
        part = f"{PARTS_DIR}/{spec.split}-{spec.index:05d}"
        atomic_write_bytes(self.fs, f"{self.root}/{part}.jsonl", "".join(x + "\n" for x in meta_lines).encode())
        atomic_write_bytes(self.fs, f"{self.root}/{part}.ip.jsonl", "".join(x + "\n" for x in ip_items).encode())
        return res

    def finish(self, release: Release, results: list[ShardResult]) -> list[str]:
        """metadata.jsonl and ip_adapter.json per split: the shards' parts concatenated in shard order."""
        files = []
        for split in dict.fromkeys(r.split for r in results):
            shards = sorted(r.index for r in results if r.split == split)
            meta_rel, ip_rel = f"{split}/metadata.jsonl", f"{split}/ip_adapter.json"
            with self._open(meta_rel) as meta_fh, self._open(ip_rel) as ip_fh:
                ip_fh.write(b"[")
                first = True
                for index in shards:
                    part = f"{self.root}/{PARTS_DIR}/{split}-{index:05d}"
                    meta_fh.write(self.fs.cat_file(f"{part}.jsonl"))
                    for line in self.fs.cat_file(f"{part}.ip.jsonl").splitlines():
                        ip_fh.write((b"\n " if first else b",\n ") + line)
                        first = False
                ip_fh.write(b"\n]\n")
            files += [meta_rel, ip_rel]
        return files


WRITERS: dict[str, type[Writer]] = {w.format: w for w in (HfParquetWriter, WebDatasetWriter, ImageFolderWriter)}
FORMATS = tuple(WRITERS)
