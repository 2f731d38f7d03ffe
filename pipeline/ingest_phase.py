"""The ingest phase (once per run): every corpus image not yet decided through the ingest stage, into `sources`
and `rejects`."""

from __future__ import annotations

import logging
import time
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from manifests.store import ManifestStore, shard_key
from manifests.tables import ItemColumns, refusal_rejects, rejects_table
from pipeline.commit import Progress
from pipeline.commit_stage import CommitSpec
from pipeline.config import PipelineConfig
from pipeline.done import ingested_keys, not_done
from pipeline.isolate import Isolation
from pipeline.phases import Phase, PhaseSettings, PhaseStats, stream_phase, undecided, with_phase_retries
from pipeline.ray_adapter import apply_stages, check_wiring, dataset_from_table, stage_chain
from pipeline.retry import next_attempts, retrying_split, with_attempt_column
from stages.corpus import CorpusListing, list_corpus
from stages.ingest import IngestStage

log = logging.getLogger(__name__)


def _round_zero(t: pa.Table) -> pa.Array:
    return pa.array([0] * t.num_rows, pa.int32())


# What an ingest rejects or attempts row names: the image's key, identity and path; ingest is round 0.
INGEST_ITEMS = ItemColumns(id="input_key", identity="identity", path="path", round_of=_round_zero)


def ingest_split(t: pa.Table, run_id: str) -> dict[str, pa.Table]:
    """Sources and rejects of a batch of ingest rows."""
    ok = t.filter(pc.equal(t["status"], "ok"))
    bad = t.filter(pc.not_equal(t["status"], "ok"))
    return {"sources": ok, "rejects": rejects_table(bad, INGEST_ITEMS, run_id)}


def run_ingest(cfg: PipelineConfig, store: ManifestStore, run_root: str,
               listing: CorpusListing | None = None) -> PhaseStats:
    """Ingest every corpus image not yet in `sources` or `rejects` (stage ingest)."""
    return with_phase_retries(PhaseSettings.of(cfg.run, cfg.ray), "ingest",
                              lambda phase: _run_ingest(cfg, store, run_root, listing, phase))


def _run_ingest(cfg: PipelineConfig, store: ManifestStore, run_root: str,
                listing: CorpusListing | None, phase: Phase) -> PhaseStats:
    started = time.monotonic()
    run_id = cfg.resolved_run_id()
    listing = listing or list_corpus(cfg.corpus)
    done = phase.done(ingested_keys(store))
    done_keys = set(done.to_pylist()) if listing.refused else set()
    refused = [r for r in listing.refused if r["input_key"] not in done_keys]
    if refused:
        store.commit(shard_key([r["input_key"] for r in refused], "ingest-refused-"),
                     {"rejects": refusal_rejects(refused, 0, run_id)}, {"phase": "ingest"})
    todo = not_done(listing.items, "input_key", done)
    log.info("ingest: %d images listed, %d already done, %d to do", listing.items.num_rows + len(listing.refused),
             len(done), todo.num_rows)
    todo = with_attempt_column(todo, next_attempts(store, todo["input_key"], 0, ("ingest",)))
    if todo.num_rows:
        check_wiring([IngestStage], todo.column_names)
        run = cfg.run.location.at(run_root)  # the run folder with run.storage_options
        split = retrying_split(partial(ingest_split, run_id=run_id), INGEST_ITEMS, run_id, cfg.run.max_attempts)
        spec = CommitSpec(run, split,
                          "input_key", "ingest-", "reject_reason", {"phase": "ingest"}, cfg.run.fault_injection,
                          cfg.run.max_attempts)
        chain = stage_chain(cfg, [IngestStage], run)
        iso = Isolation(chain,
                        lambda ids: todo.filter(pc.is_in(todo["input_key"], value_set=pa.array(ids, pa.string()))),
                        lambda ids: undecided(ids, phase.done(ingested_keys(store))))
        stream_phase(lambda in_flight: apply_stages(dataset_from_table(todo, cfg.ingest.resources.batch_size * 2),
                                                    chain, in_flight),
                     spec, store, Progress("ingest", todo.num_rows), phase, iso)
    return PhaseStats(todo.num_rows, len(done), time.monotonic() - started)
