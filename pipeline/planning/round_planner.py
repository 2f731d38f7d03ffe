"""A round's plan on the driver: planning with this run's pairing settings, and the thread that plans the round
and writes its plan files while Ray Data streams them (pipeline/generation_phase.py)."""

from __future__ import annotations

import logging
import threading
import time

import pyarrow as pa

from core.location import Location
from manifests.schemas import PLAN_INDEX_SCHEMA
from manifests.store import ManifestStore, atomic_write_bytes
from pipeline.config import PipelineConfig
from pipeline.planning.config import PlanSettings
from pipeline.planning.datasource import ReadAhead
from pipeline.planning.files import failure_url, write_plan_files
from pipeline.planning.ray_planner import RemotePlanInputs
from pipeline.planning.same_person import SamePersonThreshold, resolve_from_sources, resolved_pairing
from pipeline.planning.stream import PlanStream, RoundPlan, plan_round
from pipeline.retry import attempts_for, with_attempt_column

log = logging.getLogger(__name__)

# How many plan files the planner may write ahead of the furthest one a read task has asked for (ReadAhead).
PLAN_WRITE_AHEAD_FILES = 32


def plan_settings(cfg: PipelineConfig, same_person: SamePersonThreshold) -> PlanSettings:
    """The run's PlanSettings, its pairing section's same-person threshold resolved."""
    return PlanSettings(resolved_pairing(cfg.pairing, same_person), cfg.run.seed, cfg.data_fingerprint(),
                        dict(cfg.release.splits), cfg.resolved_run_id())


def plan_block_rows(configured: int, n_sources: int, min_rows: int) -> int:
    """Rows per plan file (one Ray Data block): `configured` (run.plan_block_rows), smaller for small rounds
    (>= 8 blocks)."""
    return max(min_rows, min(configured, -(-n_sources // 8)))


def plan_for(cfg: PipelineConfig, sources: pa.Table, round_index: int) -> RoundPlan:
    """pipeline.planning.stream.plan_round with this run's pairing section, seed, fingerprint and release splits."""
    s = plan_settings(cfg, resolve_from_sources(cfg.pairing, sources))
    return plan_round(sources, s.pairing, round_index, seed=s.seed, fingerprint=s.fingerprint, splits=s.splits)


class Planner(threading.Thread):
    """Has the round planned (duplicates, identity clusters, then chunk by chunk) by the planning task
    (ray_planner.py) and writes its plan files while the driver streams them, a few files ahead of the readers
    (`ahead`); `sized` is set once the plan's size is known (or planning failed: `error`)."""

    def __init__(self, settings: PlanSettings, store: ManifestStore, run: Location, round_index: int,
                 inputs: RemotePlanInputs, rows: int, done: pa.Array, urls: list[str],
                 past_failures: dict[str, int], started: float, ahead: ReadAhead) -> None:
        super().__init__(name=f"plan-r{round_index}", daemon=True)
        self.settings, self.store, self.run_folder, self.round_index = settings, store, run, round_index
        self.inputs, self.rows, self.done, self.urls = inputs, rows, done, urls
        self.past_failures, self.ahead = past_failures, ahead
        self.started_at = started  # the round's start, for the log
        self.sized = threading.Event()
        self.plan: PlanStream | None = None
        self.counts: tuple[int, int] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        settings, r = self.settings, self.round_index
        try:
            plan, head = self.inputs.plan(settings, r, self.rows)
            self.plan = plan
            if head.clusters is not None:  # same rows every round: one shard
                self.store.commit("identity-clusters", {"identity_clusters": head.clusters}, {"phase": "pairing"})
            log.info("round %d: identities clustered in %.1f s (wall clock %.3f-%.3f)", r,
                     head.clustered[1] - head.clustered[0], *head.clustered)
            log.info("round %d: %d candidates planned, %d already decided, %d to do (%d plan files of %d rows; "
                     "%.1f s)", r, plan.size, len(self.done), plan.size - len(self.done), len(self.urls), self.rows,
                     time.monotonic() - self.started_at)
            self.sized.set()
            chunks = (with_attempt_column(c, attempts_for(c["candidate_id"], self.past_failures))
                      for c in self.ahead.paced(plan.chunks))
            self.counts = write_plan_files(chunks, self.done, self.urls, self.run_folder,
                                           empty=with_attempt_column(PLAN_INDEX_SCHEMA.empty_table(),
                                                                     pa.array([], pa.int32())))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the driver thread
            self.error = exc
            failed = self.run_folder.at(failure_url(self.run_folder, r))
            atomic_write_bytes(failed.fs, failed.path, repr(exc).encode())
        finally:
            self.sized.set()

    def finish(self) -> None:
        """Wait for the rest of the plan, written at once (the stream has ended or failed)."""
        self.ahead.release()
        self.join()
