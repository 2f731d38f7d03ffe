"""One IDI round: ingest (once per run) -> plan -> expression transfer -> identity swap -> QC -> manifests."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from manifests.schemas import CANDIDATES, REJECTS
from manifests.store import ManifestStore, shard_key
from pipeline.commit import CommitBuffer, Progress, StageErrorGuard
from pipeline.config import PipelineConfig
from pipeline.ray_adapter import apply_stages, check_wiring, dataset_from_table, stage_section
from pipeline.retry import next_attempts, retrying_split, with_attempt_column
from qc.stage import QCStage
from stages.corpus import CorpusListing, list_corpus
from stages.expression_transfer import ExpressionTransferStage
from stages.identity_swap import IdentitySwapStage
from stages.ingest import IngestStage
from stages.pairing import RoundPlan, plan_round

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
    """When aborting, keep stage_error rows out of the manifest so a fixed rerun retries them."""
    return table.filter(pc.fill_null(pc.not_equal(table["reject_reason"], "stage_error"), True))


def _consume(ds, buffer: CommitBuffer, progress: Progress, guard: StageErrorGuard, outcome_col: str) -> None:
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            progress.update([r or "ok" for r in batch.column(outcome_col).to_pylist()])
            # checked before the batch can be committed (add() flushes after commit_seconds): an aborting batch's
            # stage_error rows never reach the manifest
            guard.check(batch.column("reject_reason").to_pylist(), batch.column("reject_detail").to_pylist())
            buffer.add(batch)
    except Exception:
        buffer.flush(keep=_drop_stage_errors)
        raise
    buffer.flush()


# -- ingest ------------------------------------------------------------------------------------------

def run_ingest(cfg: PipelineConfig, store: ManifestStore, run_root: str,
               listing: CorpusListing | None = None) -> PhaseStats:
    """Ingest every corpus image not yet in `sources` or `rejects` (stage ingest)."""
    started = time.monotonic()
    run_id = cfg.resolved_run_id()
    listing = listing or list_corpus(cfg.corpus)
    done = store.read_column_set("sources", "input_key")
    rejects = store.read_table("rejects", ["item_id", "stage"])
    done |= set(pc.filter(rejects["item_id"], pc.equal(rejects["stage"], "ingest")).to_pylist())
    refused = [r for r in listing.refused if r["input_key"] not in done]
    if refused:
        store.commit(shard_key([r["input_key"] for r in refused], "ingest-refused-"),
                     {"rejects": _rejects_rows(refused, 0, run_id)}, {"phase": "ingest"})
    todo = listing.items.filter(pc.invert(pc.is_in(listing.items["input_key"], pa.array(sorted(done), pa.string()))))
    log.info("ingest: %d images listed, %d already done, %d to do", listing.items.num_rows + len(listing.refused),
             len(done), todo.num_rows)
    todo = with_attempt_column(todo, next_attempts(store, todo["input_key"], 0, ("ingest",)))
    if todo.num_rows:
        check_wiring([IngestStage], todo.column_names, cfg, run_root)
        ds = apply_stages(dataset_from_table(todo, cfg.ingest.resources.batch_size * 2), [IngestStage], cfg, run_root)

        def split(t: pa.Table) -> dict[str, pa.Table]:
            ok = t.filter(pc.equal(t["status"], "ok"))
            bad = t.filter(pc.not_equal(t["status"], "ok"))
            rejects = pa.table({
                "item_id": bad["input_key"], "round": pa.array([0] * bad.num_rows, pa.int32()),
                "stage": bad["reject_stage"], "reason": bad["reject_reason"], "detail": bad["reject_detail"],
                "identity": bad["identity"], "path": bad["path"],
                "run_id": pa.array([run_id] * bad.num_rows, pa.string())})
            return {"sources": ok, "rejects": rejects}

        retrying = retrying_split(split, "input_key", "identity", "path",
                                  lambda t: pa.array([0] * t.num_rows, pa.int32()), run_id, cfg.run.max_attempts)
        buffer = CommitBuffer(store, retrying, "input_key", "ingest-", cfg.run.commit_rows, cfg.run.commit_seconds,
                              {"phase": "ingest"})
        _consume(ds, buffer, Progress("ingest", todo.num_rows), _guard(cfg), "reject_reason")
    return PhaseStats(todo.num_rows, len(done), time.monotonic() - started)


# -- generation --------------------------------------------------------------------------------------

def _generation_split(run_id: str, fingerprint: str):
    def split(t: pa.Table) -> dict[str, pa.Table]:
        n = t.num_rows
        t = t.append_column("run_id", pa.array([run_id] * n, pa.string()))
        t = t.append_column("config_fingerprint", pa.array([fingerprint] * n, pa.string()))
        candidates = t.select([f.name for f in CANDIDATES])
        qc = t.select(["candidate_id", "round", "accepted", "reason", "reasons", "face_found", "id_sim_rt",
                       "id_sim_rj", "expr_dist_rt", "sharpness", "identity_backend", "identity_model",
                       "identity_model_sha256", "thresholds", "run_id"])
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
            "run_id": acc["run_id"], "config_fingerprint": acc["config_fingerprint"]})
        bad = t.filter(pc.equal(t["status"], "rejected"))
        rejects = pa.table({
            "item_id": bad["candidate_id"], "round": bad["round"], "stage": bad["reject_stage"],
            "reason": bad["reject_reason"], "detail": bad["reject_detail"], "identity": bad["identity_i"],
            "path": bad["t_aligned_path"], "run_id": bad["run_id"]})
        return {"candidates": candidates, "triples": triples, "rejects": rejects, "qc": qc}
    return split


def plan_for(cfg: PipelineConfig, sources: pa.Table, round_index: int) -> RoundPlan:
    """stages.pairing.plan_round with this run's pairing section, seed, fingerprint and release splits."""
    return plan_round(sources, cfg.pairing, round_index, seed=cfg.run.seed, fingerprint=cfg.data_fingerprint(),
                      splits=dict(cfg.release.splits))


def run_generation(cfg: PipelineConfig, store: ManifestStore, run_root: str, round_index: int,
                   stages: list | None = None) -> PhaseStats:
    """Plan the round from `sources`, then stream the plan items not yet decided through the stages
    (GENERATION_STAGES unless given: benchmarks/bench_orchestration.py passes stages/noop.py's)."""
    stages = stages or GENERATION_STAGES
    started = time.monotonic()
    run_id = cfg.resolved_run_id()
    plan = plan_for(cfg, store.read_table("sources"), round_index)
    if plan.clusters is not None and plan.clusters.cluster_of:  # same rows every round: one shard, overwritten
        model = next(iter(store.read_table("sources", ["embedding_model"])["embedding_model"].to_pylist()), None)
        store.commit("identity-clusters", {"identity_clusters": plan.clusters.table(
            cfg.pairing.same_person_similarity, model, run_id)}, {"phase": "pairing"})
    rejects = store.read_table("rejects", ["item_id", "round", "stage"])
    refused_done = set(pc.filter(rejects["item_id"], pc.and_(pc.equal(rejects["stage"], "pairing"),
                                                              pc.equal(rejects["round"], round_index))).to_pylist())
    refused = [r for r in plan.refused if r["item_id"] not in refused_done]
    if refused:
        store.commit(shard_key([r["item_id"] for r in refused], f"pairing-r{round_index}-"),
                     {"rejects": _rejects_rows(refused, round_index, run_id)}, {"phase": "pairing"})
    qc_done = store.read_table("qc", ["candidate_id", "round"])
    done = set(pc.filter(qc_done["candidate_id"], pc.equal(qc_done["round"], round_index)).to_pylist())
    todo = plan.plan.filter(pc.invert(pc.is_in(plan.plan["candidate_id"], pa.array(sorted(done), pa.string()))))
    log.info("round %d: %d candidates planned, %d already decided, %d to do", round_index, plan.plan.num_rows,
             len(done), todo.num_rows)
    todo = with_attempt_column(todo, next_attempts(store, todo["candidate_id"], round_index,
                                                   tuple(s.name for s in stages)))
    if todo.num_rows:
        check_wiring(stages, todo.column_names, cfg, run_root)
        batch = min(stage_section(s, cfg).resources.batch_size for s in stages)
        ds = apply_stages(dataset_from_table(todo, batch * 2), stages, cfg, run_root)
        split = retrying_split(_generation_split(run_id, cfg.data_fingerprint()), "candidate_id", "identity_i",
                               "t_aligned_path", lambda t: t["round"], run_id, cfg.run.max_attempts)
        buffer = CommitBuffer(store, split, "candidate_id", f"gen-r{round_index}-", cfg.run.commit_rows,
                              cfg.run.commit_seconds, {"phase": "generate", "round": round_index})
        _consume(ds, buffer, Progress(f"round {round_index}", todo.num_rows), _guard(cfg), "reason")
    return PhaseStats(todo.num_rows, len(done), time.monotonic() - started)
