"""`ciep fsck`: check every committed file of a run against its commit marker, and every image against the row
that names it. Read-only; `manifests/repair.py` acts on what it finds.

Per commit marker: its own sha256 (`manifests/integrity.py`), then per file it names: present, size, sha256 (on
an object store the ETag of a single-part upload is compared with the recorded md5, so the file is not read).
Markers written before checksums are verified by row count only (the file read with page-checksum verification;
the report counts them). Images: `sources.aligned_*`, `candidates.transfer_*` and `reference_*` (the triples name
the same files), found under the run folder by their `images/<kind>/<id>.png` tail, so a moved or copied run is
checked where it is.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import fsspec
from fsspec.implementations.local import LocalFileSystem

from core.hashing import sha256_fs_file
from core.location import Location
from manifests.integrity import DIGESTS, DamagedManifestError, parse_marker, read_shard
from manifests.store import COMMITS_DIR, ManifestStore, full_url

# (table, id column, [(path column, sha256 column)]) of every image a run writes (manifests/artifacts.py)
IMAGE_COLUMNS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("sources", "source_id", (("aligned_path", "aligned_sha256"),)),
    ("candidates", "candidate_id", (("transfer_path", "transfer_sha256"), ("reference_path", "reference_sha256"))),
)


@dataclass(frozen=True)
class Problem:
    """One bad file: a commit marker, a file a marker names (`shard` says which commit), or an image (`items`
    says which rows name it: (table, id))."""

    path: str
    what: str
    shard: str | None = None
    items: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass
class FsckReport:
    run: str
    markers: int = 0
    files: int = 0
    bytes: int = 0
    by_store_checksum: int = 0  # files checked by the object store's ETag instead of reading them
    legacy_markers: int = 0  # markers without checksums: their files verified by row count only
    images: int = 0
    image_bytes: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        how = f", {self.by_store_checksum} by the store's checksum" if self.by_store_checksum else ""
        lines = [f"fsck {self.run}: {self.markers} commit markers, {self.files} files ({self.bytes / 1e6:.1f} MB"
                 f"{how}), {self.images} images ({self.image_bytes / 1e6:.1f} MB) checked in {self.seconds:.1f} s: "
                 + ("OK" if self.ok else f"{len(self.problems)} problem(s)")]
        if self.legacy_markers:
            lines.append(f"note: {self.legacy_markers} commit marker(s) were written before checksums: their files "
                         "were verified by row count and Parquet decoding only")
        return "\n".join(lines)


def image_rel(url: str) -> str | None:
    """`images/<kind>/<id>.png` of an image URL a run wrote (None for anything else)."""
    head, sep, tail = url.rpartition("/images/")
    return f"images/{tail}" if sep and head else None


def _store_md5(fs: fsspec.AbstractFileSystem, info: dict) -> str | None:
    """The md5 an object store gives for a single-part upload (its ETag), if it gives one."""
    if isinstance(fs, LocalFileSystem):
        return None
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"').lower()
    return etag if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag) else None


@dataclass(frozen=True)
class _FileCheck:
    what: str | None  # None: good
    size: int = 0
    by_store: bool = False


def _check_file(fs: fsspec.AbstractFileSystem, path: str, digest: dict | None, rows: int | None) -> _FileCheck:
    """What is wrong with one committed file (None when nothing is)."""
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return _FileCheck("missing (named by its commit marker)")
    size = int(info.get("size") or 0)
    if digest is None:  # a marker from before checksums: decode it all (page checksums if any) and count rows
        try:
            got = read_shard(fs, path).num_rows
        except DamagedManifestError as err:
            return _FileCheck(f"unreadable: {err.detail}", size)
        return _FileCheck(None if rows is None or got == rows else f"{got} rows, its commit marker says {rows}",
                          size)
    if size != digest["bytes"]:
        return _FileCheck(f"size {size} bytes, its commit marker says {digest['bytes']}", size)
    etag_md5 = _store_md5(fs, info)
    if etag_md5 is not None and digest.get("md5"):
        return _FileCheck(None if etag_md5 == digest["md5"] else
                          "content differs from its commit marker (the store's ETag/md5)", size, by_store=True)
    sha, _ = sha256_fs_file(fs, path)
    return _FileCheck(None if sha == digest["sha256"] else "content differs from its commit marker (sha256)", size)


def _read_markers(store: ManifestStore, report: FsckReport) -> dict[str, dict]:
    """shard -> marker of every readable marker; the others become problems."""
    fs = store.fs
    folder = f"{store.manifests_dir}/{COMMITS_DIR}"
    fs.invalidate_cache(folder)
    paths = sorted(fs.glob(f"{folder}/*.json"))
    contents = fs.cat(paths, on_error="return") if paths else {}
    out: dict[str, dict] = {}
    for path in paths:
        shard = posixpath.basename(path)[: -len(".json")]
        data = contents.get(path)
        if isinstance(data, FileNotFoundError) or data is None:
            continue  # removed between listing and reading (a compaction or sweep): not committed any more
        if isinstance(data, Exception):
            raise data
        report.markers += 1
        try:
            marker = parse_marker(path, data)
        except DamagedManifestError as err:
            report.problems.append(Problem(path, err.detail, shard=shard))
            continue
        if marker["shard"] != shard:
            report.problems.append(Problem(path, f"commit marker names shard {marker['shard']!r}", shard=shard))
            continue
        out[shard] = marker
    return out


def _parallel(fn: Callable, args: Iterable[tuple], workers: int) -> list:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda a: fn(*a), args))


def check_run(run: Location | str, images: bool = True, workers: int = 8) -> FsckReport:
    """Check a run folder's committed manifests (and images); never changes anything."""
    return check_store(ManifestStore.open(run), images, workers)


def check_store(store: ManifestStore, images: bool = True, workers: int = 8) -> FsckReport:
    """check_run for a store (a run's, or a release's without images)."""
    started = time.monotonic()
    report = FsckReport(full_url(store.fs, store.root))
    markers = _read_markers(store, report)
    live = ManifestStore._live(list(markers.values()))
    report.legacy_markers = sum(1 for m in live if DIGESTS not in m)
    todo = [(f"{store.manifests_dir}/{rel}", m[DIGESTS].get(table) if DIGESTS in m else None,
             m.get("rows", {}).get(table), m["shard"], table) for m in live for table, rel in m["files"].items()]
    found = _parallel(lambda p, d, r, _shard, _table: _check_file(store.fs, p, d, r), todo, workers)
    good: dict[str, list[str]] = {}
    for (path, _, _, shard, table), check in zip(todo, found, strict=True):
        report.files += check.what is None or check.size > 0
        report.bytes += check.size
        report.by_store_checksum += check.by_store
        if check.what is None:
            good.setdefault(table, []).append(path)
        else:
            report.problems.append(Problem(path, check.what, shard=shard))
    if images:
        _check_images(store, good, report, workers)
    report.problems.sort(key=lambda p: p.path)
    report.seconds = time.monotonic() - started
    return report


def _check_images(store: ManifestStore, good: dict[str, list[str]], report: FsckReport,
                  workers: int) -> None:
    """Hash every image the good shards name, once each, against every row that names it."""
    expected: dict[str, tuple[set[str], list[tuple[str, str]]]] = {}
    for table, id_col, pairs in IMAGE_COLUMNS:
        cols = [id_col] + [c for pair in pairs for c in pair]
        for path in sorted(good.get(table, [])):
            for row in read_shard(store.fs, path, columns=cols).to_pylist():
                for path_col, sha_col in pairs:
                    rel = image_rel(row[path_col] or "")
                    if rel is None:
                        continue
                    shas, items = expected.setdefault(rel, (set(), []))
                    shas.add(row[sha_col])
                    items.append((table, row[id_col]))

    def check(rel: str) -> tuple[str, str | None, int]:
        path = f"{store.root}/{rel}"
        try:
            sha, size = sha256_fs_file(store.fs, path)
        except FileNotFoundError:
            return rel, "missing (named by a manifest row)", 0
        shas = expected[rel][0]
        if len(shas) != 1:
            return rel, f"manifest rows disagree on its sha256 ({len(shas)} values)", size
        return rel, None if sha in shas else "content differs from its manifest row (sha256)", size

    for rel, what, size in _parallel(check, [(r,) for r in sorted(expected)], workers):
        report.images += 1
        report.image_bytes += size
        if what is not None:
            report.problems.append(Problem(f"{store.root}/{rel}", what, items=tuple(sorted(set(expected[rel][1])))))


def first_damaged(store: ManifestStore) -> Problem | None:
    """The first bad marker or manifest file of a store (no images): what a failed query blames."""
    report = check_store(store, images=False)
    return report.problems[0] if report.problems else None
