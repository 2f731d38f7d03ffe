"""IDI iteration: round r generates with the adapter trained after round r-1, then trains the next one.

Lineage rows say which adapter made which round's data (`generated_with`) and which round's triples made
which adapter (`trained_on`). Backends without an adapter (landmark_warp) still run several rounds (new
swap partners per round); only the eadapter backend trains.
"""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.compute as pc

from core.config import ConfigError
from manifests.schemas import LINEAGE
from manifests.store import ManifestStore
from pipeline.config import PipelineConfig
from pipeline.generation_phase import run_generation
from pipeline.retry import pending_retries

log = logging.getLogger(__name__)


def adapter_url(run_url: str, round_index: int) -> str:
    """Where the adapter used by round `round_index` (>= 1) is trained to."""
    return f"{run_url}/adapters/round-{round_index}"


def round_config(cfg: PipelineConfig, round_index: int, adapter: str | None) -> PipelineConfig:
    """The config one round runs with: the run id pinned, the round's backend and adapter set."""
    run = cfg.run.model_copy(update={"run_id": cfg.resolved_run_id()})
    update: dict = {"adapter": adapter}
    if round_index == 0 and cfg.expression_transfer.bootstrap_backend:
        update["backend"] = cfg.expression_transfer.bootstrap_backend
    et = cfg.expression_transfer.model_copy(update=update)
    return cfg.model_copy(update={"run": run, "expression_transfer": et})


def _lineage(round_index: int, kind: str, run_id: str, **fields) -> pa.Table:
    row = dict(round=round_index, kind=kind, adapter_id=None, adapter_sha256=None, adapter_path=None,
               data_round=None, triples=None, detail=None, run_id=run_id)
    row.update(fields)
    return pa.Table.from_pylist([row], schema=LINEAGE)


def _record_generated_with(store: ManifestStore, round_index: int, adapter: str | None, run_id: str) -> None:
    """One row per expression model that actually made this round's candidates, read back from them."""
    cands = store.read_table("candidates", ["round", "expression_model", "expression_model_sha256"])
    cands = cands.filter(pc.equal(cands["round"], round_index))
    models = sorted({(m, h) for m, h in zip(cands["expression_model"].to_pylist(),
                                            cands["expression_model_sha256"].to_pylist(), strict=False) if m})
    rows = [_lineage(round_index, "generated_with", run_id, adapter_id=m, adapter_sha256=h, adapter_path=adapter,
                     data_round=round_index,
                     triples=int(pc.sum(pc.equal(cands["expression_model_sha256"], h)).as_py() or 0))
            for m, h in models]
    if rows:
        store.commit(f"lineage-r{round_index}-generated", {"lineage": pa.concat_tables(rows)}, {"phase": "lineage"})


def _trained_adapter(store: ManifestStore, round_index: int) -> str | None:
    """The adapter_path of round_index's committed `trained_on` lineage row (written after training ended)."""
    lin = store.read_table("lineage", ["round", "kind", "adapter_path"])
    lin = lin.filter(pc.and_(pc.equal(lin["round"], round_index), pc.equal(lin["kind"], "trained_on")))
    return lin["adapter_path"][0].as_py() if lin.num_rows else None


def _train_next(cfg: PipelineConfig, store: ManifestStore, run_url: str, round_index: int,
                adapter: str | None) -> str | None:
    """Train the adapter for round_index + 1 on round_index's accepted triples; returns its folder."""
    from pipeline.train_adapter import train_adapter

    triples = store.read_table("triples", ["round", "s_path", "r_path", "t_path", "s_embedding", "triple_id"])
    triples = triples.filter(pc.equal(triples["round"], round_index))
    if triples.num_rows == 0:
        log.warning("round %d accepted no triples: round %d keeps the same adapter", round_index, round_index + 1)
        return adapter
    out = adapter_url(run_url, round_index + 1)
    done = _trained_adapter(store, round_index + 1)
    if done is not None:  # a finished round's adapter is never retrained (its lineage row stays as written)
        log.info("round %d: adapter already trained (%s), not retraining", round_index + 1, done)
        return done
    base_model = cfg.expression_transfer.base_model
    if not base_model:
        raise ConfigError("expression_transfer.base_model is required to train the next round's adapter")
    result = train_adapter(triples.to_pylist(), "refined", base_model, adapter, cfg.run.location.at(out),
                           cfg.train, expression_cfg=cfg.expression_transfer,
                           run_name=f"{cfg.resolved_run_id()}-round-{round_index + 1}")
    detail = json.dumps(dict(steps=result.steps, start_step=result.start_step, mode=result.mode,
                             first_loss=result.losses[0] if result.losses else None,
                             last_loss=result.losses[-1] if result.losses else None, init_adapter=adapter))
    store.commit(f"lineage-r{round_index + 1}-trained",
                 {"lineage": _lineage(round_index + 1, "trained_on", cfg.resolved_run_id(),
                                      adapter_id=result.adapter_id, adapter_sha256=result.adapter_sha256,
                                      adapter_path=result.adapter_url, data_round=round_index,
                                      triples=triples.num_rows, detail=detail)},
                 {"phase": "lineage"})
    return result.adapter_url


def run_rounds(cfg: PipelineConfig, store: ManifestStore, run_url: str) -> int:
    """Run cfg.run.rounds rounds (resuming any that are done); returns the number of items processed."""
    adapter = cfg.expression_transfer.adapter
    trains = cfg.expression_transfer.backend == "eadapter"
    items = 0
    for r in range(cfg.run.rounds):
        items += run_generation(round_config(cfg, r, adapter), store, run_url, r).todo
        if pending_retries(store).get(f"round {r}"):
            log.warning("round %d has items left to retry (transient errors): later rounds wait for a rerun", r)
            break
        _record_generated_with(store, r, adapter, cfg.resolved_run_id())
        if trains and r + 1 < cfg.run.rounds:
            adapter = _train_next(cfg, store, run_url, r, adapter)
    return items
