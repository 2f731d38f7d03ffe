"""Immutable dataset releases: a verified, self-contained snapshot of a run's accepted triples.

Layout under a releases root (default `<output_root>/releases`):
    <name>/release.json                  written last: a release exists once this file does
    <name>/README.md                     dataset card (Hugging Face YAML header + prose)
    <name>/manifests/triples/...         release manifest (run triple + split + file facts), commit markers
    <name>/manifests/lineage/...         the run's lineage rows for the released rounds
    _pool/images/<aa>/<sha256>.png       every image any release names, content-addressed, shared by all
                                         releases of this root (publish/image_pool.py); a release's
                                         manifest names them `../_pool/images/...` (format 1 releases kept
                                         their own `<name>/images/`, still readable)
    _claims/<name>.json                  exclusive-create marker: whoever creates it owns the name
    _staging/<name>-<uuid>/              where a local release is built before one atomic rename

A name is claimed with an exclusive create, so of two concurrent creates one wins and the other fails with
ReleaseExistsError. Images go into the pool hash-checked (one task per run manifest file; tasks run in
parallel on Ray Data through pipeline.publish_on_ray), the manifest is written in batches, and on a local
filesystem the finished folder is published by a single rename. A release is self-contained together with
its releases root's pool: copy `<name>/` and `_pool/` together.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import posixpath
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from core.hashing import sha256_fs_file
from core.location import Location
from core.splits import split_of
from manifests.runs import now_iso, read_run_info
from manifests.scan import iter_batches, release_arrow_memory
from manifests.schemas import QC_SCORES
from manifests.store import COMMITS_DIR, ManifestStore, atomic_write_bytes, exclusive_create_bytes, shard_key
from publish.dataset_card import render_card
from publish.image_pool import ImagePool, PoolError
from publish.progress import progress
from publish.release_schema import IMAGE_ROLES, RELEASE_FORMAT_VERSION, RELEASE_TABLES, RELEASE_TRIPLES
from publish.release_stats import release_lineage, release_stats, run_qc_summary
from qc.redecide import current_version

log = logging.getLogger(__name__)

RELEASE_INFO = "release.json"
CARD = "README.md"
CLAIMS_DIR = "_claims"
STAGING_DIR = "_staging"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SPLIT_RULE = ("identity-closed: an identity goes to a split by sha256('ciep-split:' + identity) against the "
              "cumulative split ratios (identity: its cluster's name when the run found one person under several "
              "names, table identity_clusters) (stable across releases); a triple is kept only when its identity i "
              "(S, T) and identity j (R) fall in the same split, so no identity appears in two splits")


class ReleaseError(RuntimeError):
    """A release could not be made or read."""


class ReleaseExistsError(ReleaseError):
    """The release name is taken (published, or claimed by a create in progress or one that crashed)."""


class ReleaseNotFoundError(ReleaseError, FileNotFoundError):
    """No published release of that name."""


def default_releases_root(output_root: str) -> str:
    return f"{output_root.rstrip('/')}/releases"


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ReleaseError(f"invalid release name {name!r}: use letters, digits, '.', '_', '-' "
                           "(not starting with '.', '_' or '-')")
    return name


# -- splits ----------------------------------------------------------------------------------------------
# -- opening ---------------------------------------------------------------------------------------------
@dataclass
class Release:
    """A published release: its folder and what release.json says about it."""

    name: str
    fs: fsspec.AbstractFileSystem
    root: str  # the release folder, without protocol
    info: dict = field(repr=False)

    @property
    def store(self) -> ManifestStore:
        return ManifestStore(self.fs, self.root, schemas=dict(RELEASE_TABLES))

    def path(self, rel: str) -> str:
        """A manifest path (relative to the release folder; pool images are `../_pool/...`) made absolute."""
        return posixpath.normpath(f"{self.root}/{rel}")

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    @property
    def splits(self) -> list[str]:
        return list(self.info.get("splits", {}))


def open_release(releases_root: Location | str, name: str) -> Release:
    root = Location.of(releases_root)
    folder = root.sub_path(validate_name(name))
    try:
        info = json.loads(root.fs.cat_file(f"{folder}/{RELEASE_INFO}"))
    except FileNotFoundError:
        raise ReleaseNotFoundError(f"no release {name!r} under {root.url!r}") from None
    return Release(name, root.fs, folder, info)


def open_release_url(url: Location | str) -> Release:
    """A release given by its own folder (anything holding a release.json)."""
    where = Location.of(url)
    fs, folder = where.fs, where.path
    try:
        info = json.loads(fs.cat_file(f"{folder}/{RELEASE_INFO}"))
    except FileNotFoundError:
        raise ReleaseNotFoundError(f"{where.url!r} holds no {RELEASE_INFO}") from None
    return Release(info.get("name", posixpath.basename(folder)), fs, folder, info)


def list_releases(releases_root: Location | str) -> list[dict]:
    """release.json of every published release, oldest first."""
    root = Location.of(releases_root)
    if not root.fs.exists(root.path):
        return []
    out = [json.loads(root.fs.cat_file(p)) for p in root.fs.glob(f"{root.path}/*/{RELEASE_INFO}")]
    return sorted(out, key=lambda i: (i.get("created_at", ""), i.get("name", "")))


def release_stores(root: Location | str, names: list[str]) -> dict[str, ManifestStore]:
    """Manifest stores of named releases, for `manifests.query.connect`. `root` is a releases root or an
    output root (whose `releases/` folder is then used)."""
    releases_root = Location.of(root)
    if names and not releases_root.exists(names[0], RELEASE_INFO):
        releases_root = releases_root.join("releases")
    return {name: open_release(releases_root, name).store for name in names}


# -- creating --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleaseJob:
    """What every release task needs (picklable: tasks may run in other processes or on other nodes)."""

    run_fs: fsspec.AbstractFileSystem
    run_root: str
    fs: fsspec.AbstractFileSystem  # of the releases root
    releases_root: str
    staging: str  # the release folder being built
    name: str
    splits: dict[str, float]
    rounds: tuple[int, ...] | None
    batch_size: int
    commit_rows: int
    decision_version: int = 0  # > 0 when re-decided (qc/redecide.py): only that decision's triples
    # one person under several identity names (the run's identity_clusters table) goes to one split
    cluster_of: dict[str, str] = field(default_factory=dict)


_LANDMARKS: dict[tuple[str, str], tuple[pa.Array, pa.ChunkedArray]] = {}


def _source_landmarks(run_fs: fsspec.AbstractFileSystem, run_root: str) -> tuple[pa.Array, pa.ChunkedArray]:
    """(source_id, landmarks68) of a run's sources, read once per process (small columns, in Arrow)."""
    key = (str(run_fs.protocol), run_root)
    if key not in _LANDMARKS:
        t = ManifestStore(run_fs, run_root).read_table("sources", ["source_id", "landmarks68"])
        _LANDMARKS.clear()  # one run at a time per process
        _LANDMARKS[key] = (t.column("source_id").combine_chunks(), t.column("landmarks68"))
    return _LANDMARKS[key]


def _landmarks_for(ids: pa.Array, lookup: tuple[pa.Array, pa.ChunkedArray]) -> pa.Array:
    idx = pc.index_in(ids, value_set=lookup[0])
    if not len(lookup[0]):
        return pa.nulls(len(ids), pa.list_(pa.float32()))
    return lookup[1].take(idx).combine_chunks().cast(pa.list_(pa.float32()))


def release_run_file(job: ReleaseJob, path: str) -> dict[str, int]:
    """Release the triples of one run manifest file: keep split-closed triples, put their images in the pool,
    commit release manifest shards (named by their triple ids). Returns small counts for the driver."""
    pool = ImagePool(job.fs, job.releases_root)
    try:
        counts = _release_triples(job, path, pool)
    finally:
        pool.discard()  # nothing left after a success; a failure leaves no temporary file
    counts.update(images_added=pool.images_added, images_reused=pool.images_reused,
                  image_bytes_added=pool.bytes_added)
    return counts


def _release_triples(job: ReleaseJob, path: str, pool: ImagePool) -> dict[str, int]:
    """release_run_file's work; the caller owns the pool (its unflushed images are discarded on any exit)."""
    store = ManifestStore(job.fs, job.staging, schemas=dict(RELEASE_TABLES))
    lookup = _source_landmarks(job.run_fs, job.run_root)
    flt = pads.field("round").isin(list(job.rounds)) if job.rounds else None
    if job.decision_version:
        latest = pads.field("decision_version") == job.decision_version
        flt = latest if flt is None else flt & latest
    split_cache: dict[str, str] = {}
    pending: list[pa.Table] = []
    counts = dict(triples=0, excluded_cross_split=0)

    def split(identity: str) -> str:
        if identity not in split_cache:
            split_cache[identity] = split_of(job.cluster_of.get(identity, identity), job.splits)
        return split_cache[identity]

    def commit() -> None:
        pool.flush()  # the images first: a committed shard only names durable pool files
        table = pa.concat_tables(pending)
        store.commit(shard_key(table.column("triple_id").to_pylist(), "t-"), {"triples": table})
        pending.clear()
        release_arrow_memory()

    with job.run_fs.open(path, "rb") as fh:
        for batch in pq.ParquetFile(fh).iter_batches(batch_size=job.batch_size):
            table = pa.Table.from_batches([batch])
            if flt is not None:
                table = table.filter(flt)
            keep, split_col = [], []
            for k, (i, j) in enumerate(zip(table.column("identity_i").to_pylist(),
                                           table.column("identity_j").to_pylist(), strict=True)):
                if split(i) != split(j):
                    counts["excluded_cross_split"] += 1
                    continue
                keep.append(k)
                split_col.append(split(i))
            if not keep:
                continue
            table = table.take(keep)
            extra: dict[str, pa.Array] = {"split": pa.array(split_col, pa.string()),
                                          "release": pa.array([job.name] * len(keep), pa.string())}
            for key in IMAGE_ROLES:
                try:
                    put = [pool.put(job.run_fs, url, sha) for url, sha in
                           zip(table.column(f"{key}_path").to_pylist(), table.column(f"{key}_sha256").to_pylist(),
                               strict=True)]
                except PoolError as err:
                    raise ReleaseError(str(err)) from None
                extra[f"{key}_file"] = pa.array([c[0] for c in put], pa.string())
                extra[f"{key}_bytes"] = pa.array([c[1] for c in put], pa.int64())
            for key in ("s", "t"):
                extra[f"{key}_landmarks68"] = _landmarks_for(table.column(f"{key}_source_id").combine_chunks(),
                                                             lookup)
            for col, arr in extra.items():
                table = table.append_column(col, arr)
            pending.append(table.select(RELEASE_TRIPLES.names).cast(RELEASE_TRIPLES))
            counts["triples"] += len(keep)
            if sum(t.num_rows for t in pending) >= job.commit_rows:
                commit()
    if pending:
        commit()
    return counts


# How release tasks are run: (task, job, run manifest files) -> one count dict per file. The default runs
# them here one after another; pipeline/publish_on_ray.py runs them as Ray Data tasks across the cluster.
FileMapper = Callable[[Callable[[ReleaseJob, str], dict[str, int]], ReleaseJob, list[str]], Iterable[dict[str, int]]]


def map_files_here(task: Callable[[ReleaseJob, str], dict[str, int]], job: ReleaseJob,
                   files: list[str]) -> Iterator[dict[str, int]]:
    with progress(len(files), f"release {job.name}", "shard") as bar:
        for path in files:
            out = task(job, path)
            bar.update(1)
            yield out


def _claim(fs: fsspec.AbstractFileSystem, root: str, name: str) -> str:
    if fs.exists(f"{root}/{name}/{RELEASE_INFO}"):
        raise ReleaseExistsError(f"release {name!r} exists; releases never change, choose a new name")
    claim = f"{root}/{CLAIMS_DIR}/{name}.json"
    who = dict(name=name, claimed_at=now_iso(), host=socket.gethostname(), pid=os.getpid())
    if not exclusive_create_bytes(fs, claim, json.dumps(who).encode()):
        try:
            held = json.loads(fs.cat_file(claim))
        except (FileNotFoundError, json.JSONDecodeError):
            held = {}
        if fs.exists(f"{root}/{name}/{RELEASE_INFO}"):
            raise ReleaseExistsError(f"release {name!r} exists; releases never change, choose a new name")
        raise ReleaseExistsError(
            f"release {name!r} is being created (claimed {held.get('claimed_at', '?')} by "
            f"{held.get('host', '?')} pid {held.get('pid', '?')}); if that process died, delete {claim}")
    return claim


def _user() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # noqa: BLE001 - no login name in some containers
        return socket.gethostname()


def _file_digest(fs: fsspec.AbstractFileSystem, path: str) -> dict:
    digest, size = sha256_fs_file(fs, path)
    return {"sha256": digest, "bytes": size}


def _write_lineage(fs: fsspec.AbstractFileSystem, staging: str, run_store: ManifestStore,
                   rounds: list[int] | None) -> None:
    lineage = run_store.read_table("lineage")
    if rounds and lineage.num_rows:
        keep = [r for r in lineage.to_pylist() if r["round"] in rounds or r["data_round"] in rounds]
        lineage = pa.Table.from_pylist(keep, schema=lineage.schema)
    if lineage.num_rows:
        ManifestStore(fs, staging, schemas=dict(RELEASE_TABLES)).commit("lineage", {"lineage": lineage})


def _clusters(run_store: ManifestStore) -> dict[str, str]:
    """identity -> its cluster (one person under several names), from the run's identity_clusters table."""
    t = run_store.read_table("identity_clusters", ["identity", "cluster"])
    return dict(zip(t["identity"].to_pylist(), t["cluster"].to_pylist(), strict=True))


def _check_unique_ids(run_store: ManifestStore, rounds: list[int] | None) -> None:
    """A run's triple ids are unique by construction; refuse a run where they are not (DuckDB, out of core)."""
    from manifests.query import connect, fetch_one

    where = f"where round in ({', '.join(str(int(r)) for r in rounds)})" if rounds else ""
    dup, = fetch_one(connect(run_store), f"select count(*) - count(distinct triple_id) from triples {where}")
    if dup:
        raise ReleaseError(f"run {run_store.root} has {dup} duplicate triple id(s); its manifest is damaged")


def _publish(fs: fsspec.AbstractFileSystem, staging: str, final: str) -> None:
    if staging == final:
        return
    if fs.exists(final):
        raise ReleaseExistsError(f"{final} appeared while the release was being built")
    os.rename(staging, final)  # local only: one atomic rename publishes the whole folder


def create_release(run_url: Location | str, name: str, releases_root: Location | str, *,
                   rounds: list[int] | None = None, splits: dict[str, float] | None = None,
                   license: str = "cc-by-4.0", batch_size: int = 256, commit_rows: int = 4096,
                   map_files: FileMapper | None = None) -> Release:
    """Snapshot the accepted triples of a run (optionally some rounds) as the immutable release `name`.

    One task per run manifest file (`map_files`: here, one after another, by default; on Ray Data with
    pipeline.publish_on_ray) reads it `batch_size` rows at a time, puts its images in the releases root's
    shared pool (an image already there costs no bytes) and writes manifest shards of about `commit_rows`
    rows."""
    validate_name(name)
    splits = dict(splits or {"train": 0.8, "validation": 0.1, "test": 0.1})
    if abs(sum(splits.values()) - 1.0) > 1e-6 or any(v < 0 for v in splits.values()):
        raise ReleaseError(f"split ratios must be non-negative and sum to 1, got {splits}")
    run = Location.of(run_url)
    releases = Location.of(releases_root)
    run_info = read_run_info(run)
    if not run_info:
        raise ReleaseNotFoundError(f"no run at {run.url!r} (run.json missing)")
    run_store = ManifestStore.open(run)
    _check_unique_ids(run_store, sorted(set(rounds)) if rounds else None)
    fs, root = releases.fs, releases.path
    final = f"{root}/{name}"
    claim = _claim(fs, root, name)
    local = isinstance(fs, LocalFileSystem)
    staging = f"{root}/{STAGING_DIR}/{name}-{uuid.uuid4().hex[:12]}" if local else final
    job = ReleaseJob(run_store.fs, run_store.root, fs, root, staging, name, splits,
                     tuple(sorted(set(rounds))) if rounds else None, batch_size, commit_rows,
                     current_version(run_store), _clusters(run_store))
    try:
        totals: dict[str, int] = {}
        for counts in (map_files or map_files_here)(release_run_file, job, run_store.committed_files("triples")):
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
        _write_lineage(fs, staging, run_store, sorted(set(rounds)) if rounds else None)
        store = ManifestStore(fs, staging, schemas=dict(RELEASE_TABLES))
        stats = release_stats(store, list(splits))
        if stats["triples"] == 0:
            raise ReleaseError(f"run {run_info.get('run_id')} has no accepted triples"
                               + (f" in rounds {rounds}" if rounds else "") + " that fit one split")
        stats.update(excluded_cross_split=totals.get("excluded_cross_split", 0),
                     pool_images_added=totals.get("images_added", 0),
                     pool_image_bytes_added=totals.get("image_bytes_added", 0))
        config = run_info.get("config", {})
        info = dict(
            name=name, format_version=RELEASE_FORMAT_VERSION, created_at=now_iso(), created_by=_user(),
            license=license, splits=splits, split_rule=SPLIT_RULE,
            source=dict(run_id=run_info.get("run_id"), run_url=run.url,
                        config_fingerprint=run_info.get("config_fingerprint"),
                        run_created_at=run_info.get("created_at"),
                        corpus_root=config.get("corpus", {}).get("root"),
                        rounds=sorted(set(rounds)) if rounds else sorted(int(r) for r in stats["rounds"])),
            lineage={**release_lineage(store), "config": config},
            qc=run_qc_summary(run_store, sorted(set(rounds)) if rounds else None),
            stats=stats)
        atomic_write_bytes(fs, f"{staging}/{CARD}", render_card(info).encode())
        listed = [f"{staging}/{CARD}"] + sorted(fs.glob(f"{staging}/manifests/**/*.parquet")) + sorted(
            fs.glob(f"{staging}/manifests/{COMMITS_DIR}/*.json"))
        info["files"] = {p[len(staging) + 1:]: _file_digest(fs, p) for p in listed}
        atomic_write_bytes(fs, f"{staging}/{RELEASE_INFO}", json.dumps(info, indent=1, sort_keys=True).encode())
        _publish(fs, staging, final)
    except BaseException:
        if fs.exists(staging) and (staging != final or not fs.exists(f"{final}/{RELEASE_INFO}")):
            fs.rm(staging, recursive=True)
        fs.rm_file(claim)
        raise
    log.info("release %s: %d triples, %d images (%.1f MB, %.1f MB new in the pool) -> %s", name, stats["triples"],
             stats["images"], stats["image_bytes"] / 1e6, stats["pool_image_bytes_added"] / 1e6, final)
    return open_release(releases, name)


# -- verifying -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    path: str  # relative to the release folder
    kind: str  # missing | size | sha256 | unexpected
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        detail = f": expected {self.expected}, found {self.actual}" if self.expected or self.actual else ""
        return f"{self.kind:<10} {self.path}{detail}"


@dataclass
class VerifyReport:
    name: str
    files: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check(fs: fsspec.AbstractFileSystem, root: str, rel: str, sha256: str, size: int | None,
           report: VerifyReport) -> None:
    path = posixpath.normpath(f"{root}/{rel}")
    try:
        d = _file_digest(fs, path)
    except FileNotFoundError:
        report.problems.append(Problem(rel, "missing"))
        return
    report.files += 1
    report.bytes += d["bytes"]
    if size is not None and d["bytes"] != size:
        report.problems.append(Problem(rel, "size", str(size), str(d["bytes"])))
    if d["sha256"] != sha256:
        report.problems.append(Problem(rel, "sha256", sha256, d["sha256"]))


def verify_release(release: Release, batch_size: int = 1024) -> VerifyReport:
    """Re-hash every file of the release against release.json and the manifest; list every difference."""
    report = VerifyReport(release.name)
    fs, root = release.fs, release.root
    listed = release.info.get("files", {})
    for rel, d in sorted(listed.items()):
        _check(fs, root, rel, d["sha256"], d["bytes"], report)
    present_manifests = {p[len(root) + 1:] for p in fs.glob(f"{root}/manifests/**") if fs.isfile(p)}
    for rel in sorted(present_manifests - set(listed)):
        report.problems.append(Problem(rel, "unexpected"))
    if any(p.path.startswith("manifests/") for p in report.problems):
        return report  # the manifest itself is not trustworthy: its image list would be too
    expected: set[str] = set()
    cols = [f"{k}_{c}" for k in IMAGE_ROLES for c in ("file", "sha256", "bytes")]
    total = release.info.get("stats", {}).get("triples")
    with progress(total, f"verify {release.name}", "triple") as bar:
        for batch in iter_batches(release.store, "triples", columns=cols, batch_size=batch_size):
            for row in batch.to_pylist():
                for key in IMAGE_ROLES:
                    rel = row[f"{key}_file"]
                    if rel in expected:
                        continue
                    expected.add(rel)
                    _check(fs, root, rel, row[f"{key}_sha256"], row[f"{key}_bytes"], report)
            bar.update(batch.num_rows)
    for path in sorted(fs.find(f"{root}/images")):
        if path[len(root) + 1:] not in expected:
            report.problems.append(Problem(path[len(root) + 1:], "unexpected"))
    return report


# -- diffing ---------------------------------------------------------------------------------------------
DIFF_SCORES = QC_SCORES


@dataclass
class ReleaseDiff:
    a: str
    b: str
    count_a: int
    count_b: int
    added: list[dict]  # triple_id, round, split, identity_i, identity_j
    removed: list[dict]
    common: int
    split_moves: list[dict]  # triple_id, split_a, split_b
    score_shifts: dict[str, dict]  # score -> changed, mean_delta, max_abs_delta (common triples)
    distributions: dict[str, dict]  # score -> mean_a, mean_b, median_a, median_b


def diff_releases(a: Release, b: Release, eps: float = 1e-6) -> ReleaseDiff:
    """Triples added and removed from a to b, split moves, and how the QC scores shifted."""
    from manifests.query import connect, fetch_one

    con = connect({"a": a.store, "b": b.store})
    con.execute("create temp table ta as select * from triples where source = 'a'")
    con.execute("create temp table tb as select * from triples where source = 'b'")

    def rows(sql: str) -> list[dict]:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=False)) for r in cur.fetchall()]

    side = "triple_id, round, split, identity_i, identity_j, expression"
    added = rows(f"select {side} from tb anti join ta using (triple_id) order by triple_id")
    removed = rows(f"select {side} from ta anti join tb using (triple_id) order by triple_id")
    common = fetch_one(con, "select count(*) from ta join tb using (triple_id)")[0]
    moves = rows("select triple_id, ta.split as split_a, tb.split as split_b from ta join tb using (triple_id) "
                 "where ta.split <> tb.split order by triple_id")
    shifts, dists = {}, {}
    for s in DIFF_SCORES:
        changed, mean_d, max_d = fetch_one(con,
            f"select count(*) filter (where abs(tb.{s} - ta.{s}) > {eps} or (ta.{s} is null) <> (tb.{s} is null)), "
            f"avg(tb.{s} - ta.{s}), max(abs(tb.{s} - ta.{s})) from ta join tb using (triple_id)")
        shifts[s] = dict(changed=changed, mean_delta=mean_d, max_abs_delta=max_d)
        ma, mda = fetch_one(con, f"select avg({s}), median({s}) from ta")
        mb, mdb = fetch_one(con, f"select avg({s}), median({s}) from tb")
        dists[s] = dict(mean_a=ma, mean_b=mb, median_a=mda, median_b=mdb)
    na = fetch_one(con, "select count(*) from ta")[0]
    nb = fetch_one(con, "select count(*) from tb")[0]
    return ReleaseDiff(a.name, b.name, na, nb, added, removed, common, moves, shifts, dists)
