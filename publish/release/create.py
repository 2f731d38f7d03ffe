"""Creating a release (the driver): claim the name, run one worker task per run manifest file, add lineage,
stats, dataset card and release.json, then publish the folder. The layout is described in publish/release/."""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from core.location import Location
from manifests.fsck import check_store
from manifests.integrity import DamagedManifestError
from manifests.runs import now_iso, read_run_info
from manifests.store import COMMITS_DIR, ManifestStore, atomic_write_bytes, exclusive_create_bytes
from publish.dataset_card import render_card
from publish.progress import progress
from publish.release.read import (
    CARD,
    INFO_CHECKSUM,
    RELEASE_INFO,
    Release,
    ReleaseError,
    ReleaseExistsError,
    ReleaseNotFoundError,
    file_digest,
    info_checksum,
    open_release,
    validate_name,
)
from publish.release.schema import RELEASE_FORMAT_VERSION, RELEASE_TABLES
from publish.release.stats import release_lineage, release_stats, run_qc_summary
from publish.release.worker import ReleaseJob, release_run_file
from qc.audit_record import labelled_artificial
from qc.redecide import current_version

log = logging.getLogger(__name__)

CLAIMS_DIR = "_claims"
STAGING_DIR = "_staging"
SPLIT_RULE = ("identity-closed: an identity goes to a split by sha256('ciep-split:' + identity) against the "
              "cumulative split ratios (identity: its cluster's name when the run found one person under several "
              "names, table identity_clusters) (stable across releases); a triple is kept only when its identity i "
              "(S, T) and identity j (R) fall in the same split, so no identity appears in two splits")


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


def _refuse_damaged(run_store: ManifestStore) -> None:
    """DamagedManifestError naming the first bad file when `ciep fsck` would find problems in the run."""
    report = check_store(run_store)
    if not report.ok:
        first = report.problems[0]
        raise DamagedManifestError(first.path, f"{first.what}; the run fails fsck with {len(report.problems)} "
                                               "problem(s), no release is made from it")


def _publish(fs: fsspec.AbstractFileSystem, staging: str, final: str) -> None:
    if staging == final:
        return
    if fs.exists(final):
        raise ReleaseExistsError(f"{final} appeared while the release was being built")
    os.rename(staging, final)  # local only: one atomic rename publishes the whole folder


def create_release(run_url: Location | str, name: str, releases_root: Location | str, *,
                   rounds: list[int] | None = None, splits: dict[str, float] | None = None,
                   license: str = "cc-by-4.0", batch_size: int = 256, commit_rows: int = 4096,
                   map_files: FileMapper | None = None, fsck: bool = True, keep_audited: bool = False) -> Release:
    """Snapshot the accepted triples of a run (optionally some rounds) as the immutable release `name`.

    One task per run manifest file (`map_files`: here, one after another, by default; on Ray Data with
    pipeline.publish_on_ray) reads it `batch_size` rows at a time, puts its images in the releases root's
    shared pool (an image already there costs no bytes) and writes manifest shards of about `commit_rows`
    rows. `fsck` (the default) first checks the run as `ciep fsck` does and refuses a damaged one. Triples a person
    labelled artificial in an audit of the run (`ciep audit`) are left out unless `keep_audited`."""
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
    if fsck:
        _refuse_damaged(run_store)
    _check_unique_ids(run_store, sorted(set(rounds)) if rounds else None)
    fs, root = releases.fs, releases.path
    final = f"{root}/{name}"
    claim = _claim(fs, root, name)
    local = isinstance(fs, LocalFileSystem)
    staging = f"{root}/{STAGING_DIR}/{name}-{uuid.uuid4().hex[:12]}" if local else final
    job = ReleaseJob(run_store.fs, run_store.root, fs, root, staging, name, splits,
                     tuple(sorted(set(rounds))) if rounds else None, batch_size, commit_rows,
                     current_version(run_store), _clusters(run_store),
                     frozenset() if keep_audited else frozenset(labelled_artificial(run_store)))
    try:
        totals: dict[str, int] = {}
        for counts in (map_files or map_files_here)(release_run_file, job, run_store.committed_files("triples")):
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
        _write_lineage(fs, staging, run_store, sorted(set(rounds)) if rounds else None)
        store = ManifestStore(fs, staging, schemas=dict(RELEASE_TABLES))
        if not store.committed_files("triples") or (stats := release_stats(store, list(splits)))["triples"] == 0:
            raise ReleaseError(f"run {run_info.get('run_id')} has no accepted triples"
                               + (f" in rounds {rounds}" if rounds else "") + " that fit one split")
        stats.update(excluded_cross_split=totals.get("excluded_cross_split", 0),
                     excluded_by_audit=totals.get("excluded_by_audit", 0),
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
        if run_info.get("selftest"):  # the source run's validity card (qc/selftest.py), shown by card and report
            info["selftest"] = run_info["selftest"]
        if run_info.get("audit"):  # the source run's audits by eye (qc/audit.py), shown by the card and report
            info["audit"] = run_info["audit"]
        atomic_write_bytes(fs, f"{staging}/{CARD}", render_card(info).encode())
        listed = [f"{staging}/{CARD}"] + sorted(fs.glob(f"{staging}/manifests/**/*.parquet")) + sorted(
            fs.glob(f"{staging}/manifests/{COMMITS_DIR}/*.json"))
        info["files"] = {p[len(staging) + 1:]: file_digest(fs, p) for p in listed}
        info[INFO_CHECKSUM] = info_checksum(info)
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
