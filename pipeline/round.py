"""One IDI round: ingest (once per run) -> plan -> expression transfer -> identity swap -> QC -> manifests."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from core.location import Location
from manifests.schemas import CANDIDATES, PLAN_INDEX_SCHEMA, PLAN_SCHEMA, QC, REJECTS, with_columns
from manifests.store import ManifestStore, atomic_write_bytes, shard_key
from pipeline.commit import CommitBuffer, Progress, StageErrorGuard, StageFailureError
from pipeline.commit_stage import HELD_REASONS, CommitSpec, table_from_ipc
from pipeline.config import PipelineConfig
from pipeline.done import decided_candidates, ingested_keys, not_done
from pipeline.in_flight import InFlight, lost_workers
from pipeline.isolate import IsolatedActors, Isolation, PoisonIsolatedError, run_alone
from pipeline.planning.datasource import ReadAhead
from pipeline.planning.features import SourceFeatures
from pipeline.planning.files import failure_url, plan_file_urls, write_plan_files
from pipeline.planning.inputs import PlanInputs
from pipeline.planning.ray_features import RayFeatures, plan_sources
from pipeline.planning.stream import PlanStream, RoundPlan, plan_round, plan_round_stream, planned_size_bound
from pipeline.ray_adapter import (
    apply_stages,
    check_wiring,
    commit_manifests,
    dataset_from_plan_files,
    dataset_from_table,
    plan_rows_of,
    stage_section,
)
from pipeline.retry import (
    ATTEMPT_COLUMN,
    attempts_for,
    failed_attempts,
    next_attempts,
    retrying_split,
    with_attempt_column,
)
from qc.redecide import current_version
from qc.stage import QCStage
from stages.corpus import CorpusListing, list_corpus
from stages.expression_transfer import ExpressionTransferStage
from stages.identity_swap import IdentitySwapStage
from stages.ingest import IngestStage

log = logging.getLogger(__name__)

GENERATION_STAGES = [ExpressionTransferStage, IdentitySwapStage, QCStage]


@dataclass
class PhaseStats:
    todo: int
    skipped_done: int
    seconds: float


def _rejects_rows(items: list[dict], round_index: int, run_id: str) -> pa.Table:
    rows = [dict(item_id=r.get("item_id") or r["input_key"], round=round_index, stage=r.get("stage", "ingest"),
                 reason=r["reason"], detail=r.get("detail"), identity=r.get("identity"), path=r.get("path"),
                 run_id=run_id) for r in items]
    return pa.Table.from_pylist(rows, schema=REJECTS)


def _guard(cfg: PipelineConfig) -> StageErrorGuard:
    return StageErrorGuard(cfg.run.max_stage_error_rate, cfg.run.min_items_for_abort)


def _drop_stage_errors(table: pa.Table) -> pa.Table:
    """When aborting, keep stage_error (and worker_crashed) rows out of the manifest so a fixed rerun retries them."""
    return table.filter(pc.fill_null(pc.invert(pc.is_in(table["reject_reason"], value_set=pa.array(HELD_REASONS))),
                                     True))


def _consume(stats: Iterable[pa.Table], held: CommitBuffer, progress: Progress, guard: StageErrorGuard,
             flush: bool = True) -> None:
    """Read the commit stage's stats rows: progress, the abort guard, and the held stage_error rows (committed at
    the end unless `flush` is False)."""
    try:
        for table in stats:
            for row in table.to_pylist():
                progress.update_counts(row["rows"], Counter(json.loads(row["outcomes"])))
                guard.check_counts(row["rows"], row["stage_errors"], row["first_error"])
                if row["held"] is not None:
                    # stage_error rows are committed only once the guard has seen enough items to judge the model
                    held_rows = table_from_ipc(row["held"])
                    held.add(held_rows) if guard.processed >= guard.min_items else held.hold(held_rows)
    except Exception:
        held.flush(keep=_drop_stage_errors)
        raise
    finally:
        progress.close()
    if flush:
        held.flush()


@dataclass
class _Phase:
    """One phase across its restarts: one abort guard, and the decisions on items run alone (pipeline/isolate.py),
    committed when the phase ends unless the guard stopped it (so a model that kills its worker on every item
    leaves no item decided, as with stage_error); until then its restarts count them as done."""

    guard: StageErrorGuard
    alone: CommitBuffer | None = None

    def done(self, committed: pa.Array) -> pa.Array:
        """The ids decided: `committed` and those decided alone, not committed yet."""
        if self.alone is None or not self.alone.pending:
            return committed
        ids = [c for t in self.alone.pending for c in t[self.alone.id_column].chunks]
        return pc.unique(pa.concat_arrays([committed.cast(pa.string()), *[c.cast(pa.string()) for c in ids]]))

    def commit_alone(self) -> None:
        if self.alone is not None:
            self.alone.flush()


def _held(spec: CommitSpec, store: ManifestStore, cfg: PipelineConfig) -> CommitBuffer:
    return CommitBuffer(store, spec.split, spec.id_column, spec.prefix, cfg.run.commit_rows, cfg.run.commit_seconds,
                        spec.info)


def _stream(make_dataset: Callable[[InFlight], object], spec: CommitSpec, store: ManifestStore,
            cfg: PipelineConfig, progress: Progress, phase: _Phase, iso: Isolation) -> None:
    """Run the phase's dataset through the commit stage and consume its stats. When a stage actor dies, the batch
    it was on runs one item at a time (pipeline/isolate.py) before the error goes up to _with_phase_retries."""
    in_flight = InFlight.start(spec.id_column)
    try:
        ds = commit_manifests(make_dataset(in_flight), spec, cfg.run.commit_rows)  # type: ignore[arg-type]
        _consume(ds.iter_batches(batch_format="pyarrow", batch_size=None), _held(spec, store, cfg), progress,
                 phase.guard)
    except Exception as exc:
        batch = in_flight.crashed_batch(exc) if lost_workers(exc) else None
        if batch is not None:
            _run_crashed_batch(batch, exc, spec, store, cfg, phase, iso)
        raise


def _run_crashed_batch(batch: tuple[str, list[str]], exc: Exception, spec: CommitSpec, store: ManifestStore,
                       cfg: PipelineConfig, phase: _Phase, iso: Isolation) -> None:
    """Decide the undecided items of the batch a stage actor died on one at a time; raise PoisonIsolatedError when
    one of them killed its worker again (else return: the death was not an item's doing)."""
    stage, ids = batch
    todo = iso.undecided(ids)
    log.warning("a %s actor died on a batch of %d items (%s: %s); running the %d undecided ones one at a time",
                stage, len(ids), type(exc).__name__, str(exc).splitlines()[0][:200], len(todo))
    crashed: set[str] = set()
    if todo:
        phase.alone = phase.alone or _held(spec, store, cfg)
        with IsolatedActors(iso) as actors:
            _consume(run_alone(actors, spec, todo, crashed), phase.alone,
                     Progress(f"{stage}: one item at a time", len(todo)), phase.guard, flush=False)
    if crashed:
        raise PoisonIsolatedError(f"{len(crashed)} item(s) killed their {stage} worker when run alone: "
                                  f"{', '.join(sorted(crashed))}") from exc


# -- retries of a whole phase -----------------------------------------------------------------------

def _with_phase_retries(cfg: PipelineConfig, name: str, run: Callable[[_Phase], PhaseStats]) -> PhaseStats:
    """Run a phase; when actors, workers or a node die, start the phase again from what is committed.

    Stage actors are created with max_restarts=0 (pipeline/ray_adapter.py): Ray cannot promise to restart an actor
    whose constructor arguments live in the object store (ray-project/ray#53727), and Ray Data passes every
    actor's UDF that way. A fresh dataset gets fresh actors instead; committed shards are never redone and a
    shard is named by its ids, so the result is exactly that of an uninterrupted run. A restart counts against
    ray.max_task_retries (then the error is raised) unless the batch of the dead actor, run one item at a time,
    named items that kill their worker (PoisonIsolatedError): those are decided, so that restart is progress. One
    abort guard spans the phase, so a model that kills its worker on every item stops the job."""
    phase = _Phase(_guard(cfg))
    try:
        stats = _restarting(cfg, name, run, phase)
    except StageFailureError:
        raise  # nothing run alone is committed: a fixed rerun retries those items
    except Exception:
        phase.commit_alone()
        raise
    phase.commit_alone()
    return stats


def _restarting(cfg: PipelineConfig, name: str, run: Callable[[_Phase], PhaseStats], phase: _Phase) -> PhaseStats:
    restarts = 0
    while True:
        try:
            return run(phase)
        except Exception as exc:
            if isinstance(exc, StageFailureError) or not lost_workers(exc):  # the guard stopped the phase
                raise
            if not isinstance(exc, PoisonIsolatedError):
                restarts += 1
                if restarts > cfg.ray.max_task_retries:
                    raise
            log.warning("%s: workers lost (%s: %s); restarting the phase from the committed manifests "
                        "(%d of %d restarts after unattributed losses)", name, type(exc).__name__,
                        str(exc).splitlines()[0][:300], restarts, cfg.ray.max_task_retries)


def _undecided(ids: list[str], done: pa.Array) -> list[str]:
    """The ids not in `done`, in their order."""
    table = not_done(pa.table({"id": pa.array(ids, pa.string())}), "id", done)
    return table["id"].to_pylist()


# -- ingest ------------------------------------------------------------------------------------------

def _round_zero(t: pa.Table) -> pa.Array:
    return pa.array([0] * t.num_rows, pa.int32())


def _round_column(t: pa.Table) -> pa.ChunkedArray:
    return t["round"]


def _ingest_split(t: pa.Table, run_id: str) -> dict[str, pa.Table]:
    ok = t.filter(pc.equal(t["status"], "ok"))
    bad = t.filter(pc.not_equal(t["status"], "ok"))
    rejects = pa.table({
        "item_id": bad["input_key"], "round": pa.array([0] * bad.num_rows, pa.int32()),
        "stage": bad["reject_stage"], "reason": bad["reject_reason"], "detail": bad["reject_detail"],
        "identity": bad["identity"], "path": bad["path"],
        "run_id": pa.array([run_id] * bad.num_rows, pa.string())})
    return {"sources": ok, "rejects": rejects}


def run_ingest(cfg: PipelineConfig, store: ManifestStore, run_root: str,
               listing: CorpusListing | None = None) -> PhaseStats:
    """Ingest every corpus image not yet in `sources` or `rejects` (stage ingest)."""
    return _with_phase_retries(cfg, "ingest", lambda phase: _run_ingest(cfg, store, run_root, listing, phase))


def _run_ingest(cfg: PipelineConfig, store: ManifestStore, run_root: str,
                listing: CorpusListing | None, phase: _Phase) -> PhaseStats:
    started = time.monotonic()
    run_id = cfg.resolved_run_id()
    listing = listing or list_corpus(cfg.corpus)
    done = phase.done(ingested_keys(store))
    done_keys = set(done.to_pylist()) if listing.refused else set()
    refused = [r for r in listing.refused if r["input_key"] not in done_keys]
    if refused:
        store.commit(shard_key([r["input_key"] for r in refused], "ingest-refused-"),
                     {"rejects": _rejects_rows(refused, 0, run_id)}, {"phase": "ingest"})
    todo = not_done(listing.items, "input_key", done)
    log.info("ingest: %d images listed, %d already done, %d to do", listing.items.num_rows + len(listing.refused),
             len(done), todo.num_rows)
    todo = with_attempt_column(todo, next_attempts(store, todo["input_key"], 0, ("ingest",)))
    if todo.num_rows:
        check_wiring([IngestStage], todo.column_names)
        run = _run_folder(cfg, run_root)
        split = retrying_split(partial(_ingest_split, run_id=run_id), "input_key", "identity", "path",
                               _round_zero, run_id, cfg.run.max_attempts)
        spec = CommitSpec(run, split,
                          "input_key", "ingest-", "reject_reason", {"phase": "ingest"}, cfg.run.fault_injection,
                          cfg.run.max_attempts)
        iso = Isolation([IngestStage], cfg, run,
                        lambda ids: todo.filter(pc.is_in(todo["input_key"], value_set=pa.array(ids, pa.string()))),
                        lambda ids: _undecided(ids, phase.done(ingested_keys(store))))
        _stream(lambda in_flight: apply_stages(dataset_from_table(todo, cfg.ingest.resources.batch_size * 2),
                                               [IngestStage], cfg, run, in_flight),
                spec, store, cfg, Progress("ingest", todo.num_rows), phase, iso)
    return PhaseStats(todo.num_rows, len(done), time.monotonic() - started)


# -- generation --------------------------------------------------------------------------------------

def _generation_split(t: pa.Table, run_id: str, fingerprint: str, decision_version: int = 0) -> dict[str, pa.Table]:
    """Candidates, qc (every score), triples and rejects of a batch; rows join the run's current decision version."""
    n = t.num_rows
    if "decision_version" in t.column_names:  # rows join the run's current decision version
        t = t.drop_columns(["decision_version"])
    t = t.append_column("decision_version", pa.array([decision_version] * n, pa.int32()))
    t = t.append_column("run_id", pa.array([run_id] * n, pa.string()))
    t = t.append_column("config_fingerprint", pa.array([fingerprint] * n, pa.string()))
    candidates = t.select([f.name for f in CANDIDATES])
    qc = with_columns(t, QC)
    acc = t.filter(t["accepted"])
    triples = pa.table({
        "triple_id": acc["candidate_id"], "round": acc["round"], "identity_i": acc["identity_i"],
        "identity_j": acc["identity_j"], "expression": acc["expression"],
        "s_source_id": acc["s_source_id"], "s_path": acc["s_aligned_path"], "s_sha256": acc["s_aligned_sha256"],
        "r_path": acc["reference_path"], "r_sha256": acc["reference_sha256"],
        "t_source_id": acc["target_source_id"], "t_path": acc["t_aligned_path"],
        "t_sha256": acc["t_aligned_sha256"], "s_embedding": acc["s_embedding"],
        "id_sim_rt": acc["id_sim_rt"], "id_sim_rj": acc["id_sim_rj"], "expr_dist_rt": acc["expr_dist_rt"],
        "sharpness": acc["sharpness"], "seed": acc["seed"], "expression_model": acc["expression_model"],
        "expression_model_sha256": acc["expression_model_sha256"], "swap_model": acc["swap_model"],
        "swap_model_sha256": acc["swap_model_sha256"], "identity_model": acc["identity_model"],
        "identity_model_sha256": acc["identity_model_sha256"], "thresholds": acc["thresholds"],
        "run_id": acc["run_id"], "config_fingerprint": acc["config_fingerprint"],
        "decision_version": acc["decision_version"]})
    bad = t.filter(pc.equal(t["status"], "rejected"))
    rejects = pa.table({
        "item_id": bad["candidate_id"], "round": bad["round"], "stage": bad["reject_stage"],
        "reason": bad["reject_reason"], "detail": bad["reject_detail"], "identity": bad["identity_i"],
        "path": bad["t_aligned_path"], "run_id": bad["run_id"]})
    return {"candidates": candidates, "triples": triples, "rejects": rejects, "qc": qc}


def plan_block_rows(cfg: PipelineConfig, n_sources: int, min_rows: int) -> int:
    """Rows per plan file (one Ray Data block): run.plan_block_rows, smaller for small rounds (>= 8 blocks)."""
    return max(min_rows, min(cfg.run.plan_block_rows, -(-n_sources // 8)))


def plan_for(cfg: PipelineConfig, sources: pa.Table, round_index: int) -> RoundPlan:
    """planning.stream.plan_round with this run's pairing section, seed, fingerprint and release splits."""
    return plan_round(sources, cfg.pairing, round_index, seed=cfg.run.seed, fingerprint=cfg.data_fingerprint(),
                      splits=dict(cfg.release.splits))


def plan_stream_for(cfg: PipelineConfig, inputs: PlanInputs, features: SourceFeatures, round_index: int,
                    chunk_rows: int) -> PlanStream:
    """planning.stream.plan_round_stream with this run's pairing section, seed, fingerprint and release splits."""
    return plan_round_stream(inputs, features, cfg.pairing, round_index, chunk_rows, seed=cfg.run.seed,
                             fingerprint=cfg.data_fingerprint(), splits=dict(cfg.release.splits))


# How many plan files the planner may write ahead of the furthest one a read task has asked for (ReadAhead).
PLAN_WRITE_AHEAD_FILES = 32


def _run_folder(cfg: PipelineConfig, run_root: str) -> Location:
    """The run folder as a Location with run.storage_options (what the stages, commit stage and plan files reach)."""
    return cfg.run.location.at(run_root)


def run_generation(cfg: PipelineConfig, store: ManifestStore, run_root: str, round_index: int,
                   stages: list | None = None) -> PhaseStats:
    """Plan the round from `sources` into Parquet, then stream the plan items not yet decided through the stages
    (GENERATION_STAGES unless given: benchmarks/bench_orchestration.py passes stages/noop.py's) and the commit
    stage."""
    return _with_phase_retries(cfg, f"round {round_index}", lambda phase: _run_generation(
        cfg, store, run_root, round_index, stages or GENERATION_STAGES, phase))


def _run_generation(cfg: PipelineConfig, store: ManifestStore, run_root: str, round_index: int,
                    stages: list, phase: _Phase) -> PhaseStats:
    started = time.monotonic()
    run_id = cfg.resolved_run_id()
    run = _run_folder(cfg, run_root)
    batch = min(stage_section(s, cfg).resources.batch_size for s in stages)
    # the driver keeps the planner's compact columns; landmarks, embeddings and paths stay in the object store
    inputs, features = plan_sources(store)
    log.info("round %d: %d sources read for planning in %.1f s", round_index, len(inputs), time.monotonic() - started)
    rows = plan_block_rows(cfg, len(inputs), batch * 2)
    done = phase.done(decided_candidates(store, round_index))
    # The plan files are named before the plan is made, for an upper bound of its size (exact unless duplicates or
    # one-person clusters drop targets; the files past the plan's end are written empty), so that Ray Data starts
    # its actors while a thread resolves duplicates, clusters identities and writes the plan.
    bound = planned_size_bound(inputs, cfg.pairing)
    urls = plan_file_urls(run, round_index, -(-bound // rows))
    past_failures = failed_attempts(store, round_index, tuple(s.name for s in stages))
    ahead = ReadAhead(len(urls), PLAN_WRITE_AHEAD_FILES)
    planner = _Planner(cfg, store, run, round_index, inputs, features, rows, done, urls, past_failures, started,
                       ahead)
    planner.start()
    if len(done):  # a resumed round: wait for the exact size, so that a finished round starts no actor
        planner.sized.wait()
    # Ray Data's actors and read tasks start once the tasks reading the features have their workers (on a small
    # busy machine a worker started after them took 15 s) and the embeddings that the planner waits for exist.
    features.wait_embeddings()
    todo = (planner.plan.size if planner.plan is not None else bound) - len(done)
    try:
        if todo > 0 and planner.error is None:
            check_wiring(stages, [*PLAN_SCHEMA.names, ATTEMPT_COLUMN])
            split = retrying_split(partial(_generation_split, run_id=run_id, fingerprint=cfg.data_fingerprint(),
                                           decision_version=current_version(store)),
                                   "candidate_id", "identity_i", "t_aligned_path", _round_column, run_id,
                                   cfg.run.max_attempts)
            spec = CommitSpec(run, split,
                              "candidate_id", f"gen-r{round_index}-", "reason",
                              {"phase": "generate", "round": round_index}, cfg.run.fault_injection,
                              cfg.run.max_attempts)
            failure = failure_url(run, round_index)
            iso = Isolation(stages, cfg, run,
                            lambda ids: plan_rows_of(urls, ids, run, failure, features.refs, ahead.reads),
                            lambda ids: _undecided(ids, phase.done(decided_candidates(store, round_index))))
            _stream(lambda in_flight: apply_stages(dataset_from_plan_files(urls, failure, run, features.refs,
                                                                           ahead.reads),
                                                   stages, cfg, run, in_flight),
                    spec, store, cfg, Progress(f"round {round_index}", todo), phase, iso)
    except Exception:
        planner.finish()
        if planner.error is not None:  # the readers stopped because planning failed: that is the error
            raise planner.error from None
        raise
    planner.finish()
    if planner.error is not None:
        raise planner.error
    assert planner.plan is not None and planner.counts is not None
    refused_done = _pairing_refusals_done(store, round_index)
    refused = [r for r in planner.plan.refused if r["item_id"] not in refused_done]
    if refused:
        store.commit(shard_key([r["item_id"] for r in refused], f"pairing-r{round_index}-"),
                     {"rejects": _rejects_rows(refused, round_index, run_id)}, {"phase": "pairing"})
    return PhaseStats(planner.counts[1], len(done), time.monotonic() - started)


class _Planner(threading.Thread):
    """Plans the round (duplicates, identity clusters, then chunk by chunk) and writes its plan files while the
    driver streams them, a few files ahead of the readers (`ahead`); `sized` is set once the plan's size is known
    (or planning failed: `error`)."""

    def __init__(self, cfg: PipelineConfig, store: ManifestStore, run: Location, round_index: int,
                 inputs: PlanInputs, features: RayFeatures, rows: int, done: pa.Array, urls: list[str],
                 past_failures: dict[str, int], started: float, ahead: ReadAhead) -> None:
        super().__init__(name=f"plan-r{round_index}", daemon=True)
        self.cfg, self.store, self.run_folder, self.round_index = cfg, store, run, round_index
        self.inputs, self.features, self.rows, self.done, self.urls = inputs, features, rows, done, urls
        self.past_failures, self.ahead = past_failures, ahead
        self.started_at = started  # the round's start, for the log
        self.sized = threading.Event()
        self.plan: PlanStream | None = None
        self.counts: tuple[int, int] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        cfg, r = self.cfg, self.round_index
        try:
            plan = plan_stream_for(cfg, self.inputs, self.features, r, self.rows)
            self.plan = plan
            if plan.clusters is not None and plan.clusters.cluster_of:  # same rows every round: one shard
                models = self.store.read_table("sources", ["embedding_model"])["embedding_model"]
                model = models[0].as_py() if len(models) else None
                self.store.commit("identity-clusters", {"identity_clusters": plan.clusters.table(
                    cfg.pairing.same_person_similarity, model, cfg.resolved_run_id())}, {"phase": "pairing"})
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


def _pairing_refusals_done(store: ManifestStore, round_index: int) -> set[str]:
    rejects = store.read_table("rejects", ["item_id", "round", "stage"])
    return set(pc.filter(rejects["item_id"], pc.and_(pc.equal(rejects["stage"], "pairing"),
                                                      pc.equal(rejects["round"], round_index))).to_pylist())
