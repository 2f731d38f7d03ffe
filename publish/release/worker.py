"""The release create task: one run manifest file -> its split-closed triples, their images in the shared pool,
release manifest shards. Ray-free and picklable, so pipeline/publish_on_ray.py can run it on any node."""

from __future__ import annotations

from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from core.splits import split_of
from manifests.integrity import shard_batches
from manifests.scan import release_arrow_memory
from manifests.schemas import TRIPLES, conform
from manifests.store import ManifestStore, shard_key
from publish.image_pool import ImagePool, PoolError
from publish.release.read import ReleaseError
from publish.release.schema import IMAGE_ROLES, RELEASE_TABLES, RELEASE_TRIPLES


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
    # triples a person labelled artificial in an audit of the run (qc/audit.py): left out
    excluded: frozenset[str] = frozenset()


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
    counts = dict(triples=0, excluded_cross_split=0, excluded_by_audit=0)
    excluded = pa.array(sorted(job.excluded), pa.string())

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

    # the run's shard, page checksums verified: a damaged one is named (manifests/integrity.py)
    for batch in shard_batches(job.run_fs, path, job.batch_size):
        # as every read of a manifest: columns the run's writer predates (later QC scores) as nulls, any other
        # missing column an error (manifests/schemas.py conform)
        table = conform(pa.Table.from_batches([batch]), TRIPLES)
        if flt is not None:
            table = table.filter(flt)
        if len(excluded):
            audited = pc.is_in(table.column("triple_id"), value_set=excluded)
            counts["excluded_by_audit"] += int(pc.sum(audited).as_py() or 0)
            table = table.filter(pc.invert(audited))
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
