"""The round's planning off the driver: a task reads the planner's compact per-source inputs (inputs.PlanInputs)
into Ray's object store, and one streaming task plans the round from them next to the features (duplicates,
identity clusters, then T, S, j, carrier and swap source per target: stream.plan_round_stream, unchanged), yielding
the plan's size and identity-clusters table, then its chunks, then its refusals. The driver keeps no per-source
array: only the row count and per-identity image counts (to name the plan files), and one chunk at a time.

The planning task runs at most PLAN_TASK_AHEAD_CHUNKS chunks ahead of the driver that writes them (Ray's
generator back-pressure); the driver paces its own reads as before (datasource.ReadAhead).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import ray

from manifests.scan import release_arrow_memory
from manifests.store import ManifestStore
from pipeline.planning.clusters import IdentityClusters, embedding_matrix
from pipeline.planning.config import PairingConfig, PlanSettings
from pipeline.planning.inputs import PLANNER_COLUMNS, InputsPart, PlanInputs
from pipeline.planning.ray_features import (
    FEATURE_BLOCK_ROWS,
    FEATURES_TASK_CPUS,
    REST_COLUMNS,
    FeatureBlocks,
    RayFeatures,
    feature_groups,
    features_table,
    file_rows,
    read_blocks,
    read_sources,
)
from pipeline.planning.same_person import (
    CalibrationSample,
    SamePersonThreshold,
    calibrated,
    calibration_sample,
    resolve_from_inputs,
    resolve_from_sample,
    resolve_same_person,
)
from pipeline.planning.stream import PlanStream, plan_round_stream

# The planning task is one thread of Python (plans ~3,500 candidates/s on this project's 2-core box); like the
# driver thread it replaces, it takes no whole CPU from the stage actors.
PLANNER_TASK_CPUS = 0.25
PLAN_TASK_AHEAD_CHUNKS = 8
_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class InputsSummary:
    """What the driver needs of the inputs before planning: the row count and the images per identity (sorted
    names; planned_size_bound of these counts names the plan files)."""

    rows: int
    identity_counts: np.ndarray


@dataclass(frozen=True)
class PlanHead:
    """The first thing the planning task yields: the plan's size, the identity_clusters rows (None: none), and
    when (wall clock) the identities were clustered."""

    size: int
    clusters: pa.Table | None
    clustered: tuple[float, float]


@dataclass(frozen=True)
class PlanTail:
    """The last thing the planning task yields: the pairing refusals (rejects rows)."""

    refused: list[dict]


def _planner_batches(fs: fsspec.AbstractFileSystem, files: list[str], columns: list[str]) -> Iterator[pa.Table]:
    """The planner's columns, one committed file at a time (as ManifestStore.read_table reads them)."""
    for path in files:
        table = read_sources(fs, path, columns)
        for start in range(0, table.num_rows, _BATCH_ROWS):
            yield table.slice(start, _BATCH_ROWS)
        del table
        _release_memory()


def _release_memory() -> None:
    """Hand freed memory back to the OS: Arrow's pool, and glibc's heap (reading file after file otherwise leaves
    hundreds of MB of freed-but-kept pages at 1M sources)."""
    release_arrow_memory()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# Source rows per task reading the planner's inputs (whole committed files grouped): the parts are read side by side
# (on every CPU of a node, on every node of a cluster) and put together in row order by one task.
INPUT_PART_ROWS = 4 * FEATURE_BLOCK_ROWS


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _read_input_part(fs: fsspec.AbstractFileSystem, files: list[str], rows: int) -> InputsPart:
    part = InputsPart.of_batches(_planner_batches(fs, files, PLANNER_COLUMNS + ["expression_probs"]), rows)
    _release_memory()
    return part


@ray.remote(num_cpus=FEATURES_TASK_CPUS, num_returns=4)
def _combine_inputs(calibrate: bool, *parts: InputsPart) -> tuple[PlanInputs, InputsSummary, bool,
                                                                   CalibrationSample | None]:
    """The inputs, their summary, a small object that says they exist (what the feature reads wait for), and when
    `calibrate`, the same-person calibration's sample rows (read with the embedding blocks)."""
    inputs = PlanInputs.from_parts(parts)
    counts = np.bincount(inputs.identity_code, minlength=len(inputs.identity_names)).astype(np.int64)
    sample = calibration_sample(inputs) if calibrate and len(inputs) else None
    return inputs, InputsSummary(len(inputs), counts), True, sample


@ray.remote(num_cpus=FEATURES_TASK_CPUS, num_returns=3)
def _embedding_block(fs: fsspec.AbstractFileSystem, files: list[str], first_row: int, sample: CalibrationSample | None,
                     *after: object) -> tuple[pa.Table, bool, tuple[np.ndarray, np.ndarray]]:
    """An embedding block (ray_features.read_blocks), and the float64 embeddings of the calibration sample's rows
    in it with their positions in the sample: the calibration never fetches a block."""
    table = features_table(fs, files, ["embedding"])
    if sample is None:  # no sources
        return table, True, (np.zeros(0, np.int64), np.zeros((0, 0)))
    mine = np.flatnonzero((sample.rows >= first_row) & (sample.rows < first_row + table.num_rows))
    taken = embedding_matrix(table.column("embedding").take(pa.array(sample.rows[mine] - first_row)))
    return table, True, (mine, taken)


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _same_person_from_blocks(pairing: PairingConfig, sample: CalibrationSample | None,
                             *parts: tuple[np.ndarray, np.ndarray]) -> SamePersonThreshold:
    """resolve_from_inputs' threshold from the sample's embeddings as the embedding blocks' tasks took them."""
    if sample is None:  # no sources
        return resolve_same_person(pairing, [], np.zeros((0, 0)))
    d = max((m.shape[1] for _, m in parts if len(m)), default=0)
    embeddings = np.zeros((len(sample.rows), d))
    for positions, matrix in parts:
        if len(positions):
            embeddings[positions] = matrix
    return resolve_from_sample(pairing, sample, embeddings)


@ray.remote(num_cpus=FEATURES_TASK_CPUS)
def _same_person(pairing: PairingConfig, inputs: PlanInputs, embeddings: list[ray.ObjectRef],
                 starts: np.ndarray) -> SamePersonThreshold:
    """The run's same-person threshold next to the inputs: only the sampled identities' embeddings are fetched (an
    embedding block at a time)."""
    blocks = FeatureBlocks(embeddings, [], starts)
    return resolve_from_inputs(pairing, inputs, lambda rows: embedding_matrix(blocks.embedding_rows(rows)))


def _embedding_model(fs: fsspec.AbstractFileSystem, files: list[str]) -> str | None:
    """The first source row's embedding model (the one the run's embeddings come from)."""
    for path in files:
        models = read_sources(fs, path, ["embedding_model"])["embedding_model"]
        if len(models):
            return models[0].as_py()
    return None


class _TimedFeatures:
    """RayFeatures that records when `clusters` ran (wall clock)."""

    def __init__(self, features: RayFeatures) -> None:
        self.features, self.span = features, (0.0, 0.0)

    def resemblance(self, queries: list[tuple[int, list[int]]]) -> list[float] | None:
        return self.features.resemblance(queries)

    def clusters(self, names: list[str], order: np.ndarray, starts: np.ndarray,
                 threshold: float | None) -> IdentityClusters:
        started = time.time()
        try:
            return self.features.clusters(names, order, starts, threshold)
        finally:
            self.span = (started, time.time())


@dataclass(frozen=True)
class _PlanRequest:
    """One round's planning: the run's settings, the round, rows per chunk."""

    settings: PlanSettings
    round_index: int
    chunk_rows: int


@ray.remote(num_cpus=PLANNER_TASK_CPUS, num_returns="streaming")
def _plan_task(inputs: PlanInputs, features: RayFeatures, request: _PlanRequest, fs: fsspec.AbstractFileSystem,
               files: list[str]) -> Iterator[PlanHead | pa.Table | PlanTail]:
    timed = _TimedFeatures(features)
    s = request.settings
    plan = plan_round_stream(inputs, timed, s.pairing, request.round_index, request.chunk_rows, seed=s.seed,
                             fingerprint=s.fingerprint, splits=s.splits, skip_labels=s.unjudgeable)
    clusters = None
    if plan.clusters is not None and plan.clusters.cluster_of:
        clusters = plan.clusters.table(s.pairing.same_person_similarity, _embedding_model(fs, files), s.run_id)
    yield PlanHead(plan.size, clusters, timed.span)
    yield from plan.chunks
    yield PlanTail(plan.refused)


def rest_reads_in_flight() -> int:
    """How many blocks of the other features are read at once: half the cluster's CPUs (one on 2 cores), so that the
    planning task, one thread that the first plan file waits for, keeps a core while they are read beside it."""
    return max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)


class RemotePlanInputs:
    """The planner's inputs in the object store (`ref`), the features beside them, and the summary the driver
    names the plan files from."""

    def __init__(self, store: ManifestStore, pairing: PairingConfig | None = None) -> None:
        self.fs, self.files = store.fs, store.committed_files("sources")
        rows = file_rows(self.fs, self.files)
        part_groups, part_starts = feature_groups(self.files, rows, INPUT_PART_ROWS)
        parts = [_read_input_part.remote(self.fs, group, int(n))
                 for group, n in zip(part_groups, np.diff(part_starts), strict=True)]
        calibrate = pairing is not None and calibrated(pairing)
        refs: Any = _combine_inputs.remote(calibrate, *parts)  # the inputs stay in the object store
        del parts
        self.ref: ray.ObjectRef = refs[0]
        # One after the other, so that the object store holds what is read next to what is still needed rather than
        # spilling it (at 10M sources the features are 13 GB): the inputs (in parts, then put together), the
        # embeddings (with the same-person calibration's sample rows when `pairing` calibrates), then the other
        # features, a few blocks at a time beside the planning task.
        groups, starts = feature_groups(self.files, rows)
        self.pairing, self.threshold = pairing, None
        if calibrate:
            blocks: list[Any] = [_embedding_block.remote(self.fs, g, int(starts[b]), refs[3], refs[2])
                                 for b, g in enumerate(groups)]
            embeddings = [b[0] for b in blocks]
            self.threshold = _same_person_from_blocks.remote(pairing, refs[3], *[b[2] for b in blocks])
            del blocks
        else:
            embeddings = read_blocks(self.fs, groups, ["embedding"], [refs[2]])
        rest = read_blocks(self.fs, groups, REST_COLUMNS, [refs[2] if self.threshold is None else self.threshold],
                           rest_reads_in_flight())
        self.features = RayFeatures(FeatureBlocks(embeddings, rest, starts))
        self.summary: InputsSummary = ray.get(refs[1])

    def __len__(self) -> int:
        return self.summary.rows

    def same_person(self, pairing: PairingConfig) -> SamePersonThreshold:
        """same_person.resolve_from_store's value, calibrated in a task from the inputs and embedding blocks (the
        driver never reads the sources' embeddings); the one started with the inputs when `pairing` is theirs."""
        if not calibrated(pairing):
            return resolve_same_person(pairing, [], np.zeros((0, 0)))
        ref = self.threshold if self.threshold is not None and pairing == self.pairing else \
            _same_person.remote(pairing, self.ref, self.features.blocks.embeddings, self.features.blocks.starts)
        return ray.get(ref)

    def plan(self, settings: PlanSettings, round_index: int, chunk_rows: int) -> tuple[PlanStream, PlanHead]:
        """plan_round_stream in the planning task: the stream (size, then chunks; `refused` complete once they are
        exhausted) and its head."""
        request = _PlanRequest(settings, round_index, chunk_rows)
        generator: Any = _plan_task.options(_generator_backpressure_num_objects=PLAN_TASK_AHEAD_CHUNKS).remote(
            self.ref, self.features, request, self.fs, self.files)  # a stream of refs: head, chunks, tail
        head = ray.get(next(generator))
        assert isinstance(head, PlanHead)
        refused: list[dict] = []

        def chunks() -> Iterator[pa.Table]:
            for ref in generator:
                item = ray.get(ref)
                if isinstance(item, PlanTail):
                    refused.extend(item.refused)
                    return
                yield item

        return PlanStream(head.size, chunks(), refused), head
