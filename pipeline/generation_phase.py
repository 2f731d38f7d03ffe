"""The generation phase of a round: plan it from `sources` into Parquet (pipeline/planning/round_planner.py),
then stream the plan items not yet decided through expression transfer, identity swap and QC into candidates,
qc, triples and rejects."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from manifests.runs import read_run_info
from manifests.schemas import CANDIDATES, PLAN_SCHEMA, QC, with_columns
from manifests.store import ManifestStore, shard_key
from manifests.tables import ItemColumns, refusal_rejects, rejects_table, triples_table
from pipeline.commit import Progress
from pipeline.commit_stage import CommitSpec
from pipeline.config import PipelineConfig
from pipeline.done import decided_candidates
from pipeline.isolate import Isolation
from pipeline.phases import Phase, PhaseSettings, PhaseStats, stream_phase, undecided, with_phase_retries
from pipeline.planning.datasource import ReadAhead
from pipeline.planning.files import failure_url, plan_file_urls
from pipeline.planning.ray_planner import RemotePlanInputs
from pipeline.planning.round_planner import PLAN_WRITE_AHEAD_FILES, Planner, plan_block_rows, plan_settings
from pipeline.planning.stream import size_bound
from pipeline.ray_adapter import apply_stages, check_wiring, dataset_from_plan_files, plan_rows_of, stage_chain
from pipeline.retry import ATTEMPT_COLUMN, failed_attempts, retrying_split
from qc.redecide import current_version
from qc.selftest_record import unplanned_expressions
from qc.stage import QCStage
from stages.base import Stage
from stages.expression_transfer import ExpressionTransferStage
from stages.identity_swap import IdentitySwapStage

log = logging.getLogger(__name__)

GENERATION_STAGES: list[type[Stage]] = [ExpressionTransferStage, IdentitySwapStage, QCStage]


def _round_column(t: pa.Table) -> pa.ChunkedArray:
    return t["round"]


# What a generation rejects or attempts row names: the candidate, its identity i, its target T's aligned image.
CANDIDATE_ITEMS = ItemColumns(id="candidate_id", identity="identity_i", path="t_aligned_path", round_of=_round_column)


def generation_split(t: pa.Table, run_id: str, fingerprint: str, decision_version: int = 0) -> dict[str, pa.Table]:
    """Candidates, qc (every score), triples and rejects of a batch; rows join the run's current decision version."""
    n = t.num_rows
    if "decision_version" in t.column_names:  # rows join the run's current decision version
        t = t.drop_columns(["decision_version"])
    t = t.append_column("decision_version", pa.array([decision_version] * n, pa.int32()))
    t = t.append_column("run_id", pa.array([run_id] * n, pa.string()))
    t = t.append_column("config_fingerprint", pa.array([fingerprint] * n, pa.string()))
    candidates = t.select([f.name for f in CANDIDATES])
    qc = with_columns(t, QC)
    triples = triples_table(t.filter(t["accepted"]))
    rejects = rejects_table(t.filter(pc.equal(t["status"], "rejected")), CANDIDATE_ITEMS, run_id)
    return {"candidates": candidates, "triples": triples, "rejects": rejects, "qc": qc}


def run_generation(cfg: PipelineConfig, store: ManifestStore, run_root: str, round_index: int,
                   stages: list[type[Stage]] | None = None) -> PhaseStats:
    """Plan the round from `sources` into Parquet, then stream the plan items not yet decided through the stages
    (GENERATION_STAGES unless given: benchmarks/bench_orchestration.py passes stages/noop.py's) and the commit
    stage."""
    return with_phase_retries(PhaseSettings.of(cfg.run, cfg.ray), f"round {round_index}", lambda phase: _run_generation(
        cfg, store, run_root, round_index, stages or GENERATION_STAGES, phase))


def _run_generation(cfg: PipelineConfig, store: ManifestStore, run_root: str, round_index: int,
                    stages: list[type[Stage]], phase: Phase) -> PhaseStats:
    started = time.monotonic()
    run_id = cfg.resolved_run_id()
    run = cfg.run.location.at(run_root)  # the run folder with run.storage_options
    chain = stage_chain(cfg, stages, run)
    batch = min(section.resources.batch_size for section in chain.sections)
    # the planner's compact columns, landmarks, embeddings and paths stay in the object store (a task reads them,
    # the planning task plans from them): the driver keeps the row count and the images per identity
    inputs = RemotePlanInputs(store, cfg.pairing)  # the same-person calibration starts with it
    features = inputs.features
    log.info("round %d: %d sources read for planning in %.1f s", round_index, len(inputs), time.monotonic() - started)
    rows = plan_block_rows(cfg.run.plan_block_rows, len(inputs), batch * 2)
    done = phase.done(decided_candidates(store, round_index))
    # The plan files are named before the plan is made, for an upper bound of its size (exact unless duplicates or
    # one-person clusters drop targets; the files past the plan's end are written empty), so that Ray Data starts
    # its actors while a thread resolves duplicates, clusters identities and writes the plan.
    bound = size_bound(inputs.summary.identity_counts, cfg.pairing)
    urls = plan_file_urls(run, round_index, -(-bound // rows))
    past_failures = failed_attempts(store, round_index, tuple(s.name for s in stages))
    ahead = ReadAhead(len(urls), PLAN_WRITE_AHEAD_FILES)
    settings = replace(plan_settings(cfg, inputs.same_person(cfg.pairing)),  # same-person threshold
                       unjudgeable=unplanned_expressions(cfg.qc, read_run_info(run)))  # QC self-test
    planner = Planner(settings, store, run, round_index, inputs, rows, done, urls,
                      past_failures, started, ahead)
    planner.start()
    # A resumed round waits for the exact size, so that a finished round starts no actor. So does a restarted one:
    # the planning task's inputs may have died with a node and be made again by tasks that need a CPU, and the
    # actors and plan reads started beside them can take every CPU the nodes left have, the reads waiting for plan
    # files that never come (a worker node killed mid-round hung the restarted round, tests/cluster/test_multinode.py).
    if len(done) or phase.restarts:
        planner.sized.wait()
    # Ray Data's actors and read tasks start once the tasks reading the features have their workers (on a small
    # busy machine a worker started after them took 15 s) and the embeddings that the planner waits for exist.
    features.wait_embeddings()
    todo = (planner.plan.size if planner.plan is not None else bound) - len(done)
    try:
        if todo > 0 and planner.error is None:
            check_wiring(stages, [*PLAN_SCHEMA.names, ATTEMPT_COLUMN])
            split = retrying_split(partial(generation_split, run_id=run_id, fingerprint=cfg.data_fingerprint(),
                                           decision_version=current_version(store)),
                                   CANDIDATE_ITEMS, run_id, cfg.run.max_attempts)
            spec = CommitSpec(run, split,
                              "candidate_id", f"gen-r{round_index}-", "reason",
                              {"phase": "generate", "round": round_index}, cfg.run.fault_injection,
                              cfg.run.max_attempts)
            failure = failure_url(run, round_index)
            iso = Isolation(chain,
                            lambda ids: plan_rows_of(urls, ids, run, failure, features.ref, ahead.reads),
                            lambda ids: undecided(ids, phase.done(decided_candidates(store, round_index))))
            stream_phase(lambda in_flight: apply_stages(dataset_from_plan_files(urls, failure, run, features.ref,
                                                                                ahead.reads),
                                                        chain, in_flight),
                         spec, store, Progress(f"round {round_index}", todo), phase, iso)
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
                     {"rejects": refusal_rejects(refused, round_index, run_id)}, {"phase": "pairing"})
    return PhaseStats(planner.counts[1], len(done), time.monotonic() - started)


def _pairing_refusals_done(store: ManifestStore, round_index: int) -> set[str]:
    rejects = store.read_table("rejects", ["item_id", "round", "stage"])
    return set(pc.filter(rejects["item_id"], pc.and_(pc.equal(rejects["stage"], "pairing"),
                                                      pc.equal(rejects["round"], round_index))).to_pylist())
