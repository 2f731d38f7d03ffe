"""Checksums of committed data: Parquet written with page checksums and read with their verification, commit
markers that record size and sha256 of every file they name (and of themselves), and the one error a damaged
manifest file gives wherever it is read (query, resume, release): its path and `ciep fsck --repair`."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

MARKER_CHECKSUM = "marker_sha256"  # the marker's own sha256 (of its other keys, canonical JSON)
DIGESTS = "digests"  # table -> {"sha256", "bytes", "md5"} of the file the marker names for it
FSCK_HINT = "run `ciep fsck --repair` on this run, then rerun it"


class DamagedManifestError(RuntimeError):
    """A committed manifest file or commit marker cannot be read, or does not match its checksum."""

    def __init__(self, path: str, detail: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(f"damaged manifest file {path} ({detail}); {FSCK_HINT}")


def parquet_bytes(table: pa.Table) -> bytes:
    """A manifest shard's bytes: zstd, with a CRC in every page header (verified on read)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_page_checksum=True)
    return buf.getvalue()


def file_digest(data: bytes) -> dict[str, Any]:
    """What a marker records of a file it names. md5 is the ETag an object store gives a single-part upload,
    so fsck can check a file there without reading it."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "md5": hashlib.md5(data).hexdigest()}


def _canonical(marker: dict) -> bytes:
    return json.dumps({k: v for k, v in marker.items() if k != MARKER_CHECKSUM}, sort_keys=True).encode()


def seal_marker(marker: dict) -> bytes:
    """A marker's bytes with its own checksum added (what `ManifestStore.commit` writes)."""
    sealed = {**marker, MARKER_CHECKSUM: hashlib.sha256(_canonical(marker)).hexdigest()}
    return json.dumps(sealed, sort_keys=True).encode()


def parse_marker(path: str, data: bytes) -> dict:
    """A marker's content; DamagedManifestError when it is not JSON, lacks its keys or fails its own checksum.
    A marker written before checksums (no `marker_sha256`) is accepted as it is."""
    try:
        marker = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedManifestError(path, f"unreadable commit marker: {err}") from None
    if not isinstance(marker, dict) or not isinstance(marker.get("shard"), str) or \
            not isinstance(marker.get("files"), dict):
        raise DamagedManifestError(path, "commit marker lacks its shard name or file list")
    want = marker.get(MARKER_CHECKSUM)
    if want is not None and hashlib.sha256(_canonical(marker)).hexdigest() != want:
        raise DamagedManifestError(path, "commit marker does not match its own sha256")
    return marker


def is_damage(err: BaseException) -> bool:
    """Whether a read error means the file's bytes are wrong (Arrow's decoding errors, and the OSErrors without
    an errno that Parquet raises for a failed page CRC, thrift or footer), not that storage failed."""
    if isinstance(err, pa.ArrowException):
        return True
    return type(err) is OSError and err.errno is None


def read_shard(fs: fsspec.AbstractFileSystem, path: str, columns: list[str] | None = None,
               schema: pa.Schema | None = None) -> pa.Table:
    """One manifest shard, its page checksums verified; DamagedManifestError naming the file when it is bad."""
    try:
        with fs.open(path, "rb") as fh:
            return pq.read_table(fh, columns=columns, schema=schema, page_checksum_verification=True)
    except Exception as err:
        if is_damage(err):
            raise _damage(path, err) from err
        raise


def read_checked_shard(fs: fsspec.AbstractFileSystem, path: str, digest: dict | None,
                       columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    """read_shard, and first the whole file against the sha256 and size its marker recorded (`digest`; None for
    a marker written before checksums): a flipped bit the page CRCs do not cover (a page header, statistics) is
    named too, not read as a wrong value."""
    if digest is None:
        return read_shard(fs, path, columns=columns, schema=schema)
    data = fs.cat_file(path)
    if len(data) != digest.get("bytes", len(data)) or hashlib.sha256(data).hexdigest() != digest.get("sha256"):
        raise DamagedManifestError(path, f"{len(data)} bytes do not match the sha256 and size its commit marker "
                                         "recorded")
    try:
        return pq.read_table(io.BytesIO(data), columns=columns, schema=schema, page_checksum_verification=True)
    except Exception as err:
        if is_damage(err):
            raise _damage(path, err) from err
        raise


def _damage(path: str, err: BaseException) -> DamagedManifestError:
    return DamagedManifestError(path, " ".join(str(err).split())[:300])


def shard_batches(fs: fsspec.AbstractFileSystem, path: str, batch_size: int,
                  columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """A manifest shard's record batches, one row group decoded at a time, page checksums verified; damage
    (footer, pages) becomes DamagedManifestError naming the file."""
    with fs.open(path, "rb") as fh:
        try:
            reader = pq.ParquetFile(fh, page_checksum_verification=True).iter_batches(batch_size=batch_size,
                                                                                       columns=columns)
        except Exception as err:
            if is_damage(err):
                raise _damage(path, err) from err
            raise
        while True:
            try:
                batch = next(reader, None)
            except Exception as err:
                if is_damage(err):
                    raise _damage(path, err) from err
                raise
            if batch is None:
                return
            yield batch


def shard_rows(fs: fsspec.AbstractFileSystem, path: str) -> int:
    """A manifest shard's row count from its footer (DamagedManifestError when the footer is bad)."""
    with fs.open(path, "rb") as fh:
        try:
            return int(pq.ParquetFile(fh).metadata.num_rows)
        except Exception as err:
            if is_damage(err):
                raise _damage(path, err) from err
            raise
