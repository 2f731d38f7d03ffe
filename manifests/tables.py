"""The rows of the decision tables, built in one place: triples, rejects and attempts.

A phase's result rows (a stage's output: its work item's columns plus `status/reject_*`) become `rejects` and
`attempts` rows here (pipeline/ingest_phase.py, pipeline/generation_phase.py, pipeline/retry.py); accepted
generation rows, or their stored parts when `ciep qc redecide` decides again (qc/redecide.py), become `triples`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import pyarrow as pa

from manifests.schemas import ATTEMPTS, REJECTS, TRIPLE_SCORES, TRIPLES, conform

Column: TypeAlias = pa.Array | pa.ChunkedArray


@dataclass(frozen=True)
class ItemColumns:
    """Where a phase's result rows keep what a rejects or attempts row names: the item, its identity, its path
    and its round."""

    id: str  # input_key (ingest), candidate_id (generation)
    identity: str
    path: str
    round_of: Callable[[pa.Table], Column]


def rejects_table(rows: pa.Table, items: ItemColumns, run_id: str) -> pa.Table:
    """The `rejects` rows of rejected result rows (pipeline/retry.py adds their attempt and transient flag)."""
    return pa.table({
        "item_id": rows[items.id], "round": items.round_of(rows), "stage": rows["reject_stage"],
        "reason": rows["reject_reason"], "detail": rows["reject_detail"], "identity": rows[items.identity],
        "path": rows[items.path], "run_id": pa.array([run_id] * rows.num_rows, pa.string())})


def attempts_table(rows: pa.Table, items: ItemColumns, run_id: str) -> pa.Table:
    """The `attempts` rows of result rows that failed transiently before their last attempt."""
    if not rows.num_rows:
        return ATTEMPTS.empty_table()
    return pa.table({
        "item_id": rows[items.id], "round": items.round_of(rows), "stage": rows["reject_stage"],
        "attempt": rows["attempt"], "detail": rows["reject_detail"], "identity": rows[items.identity],
        "path": rows[items.path], "run_id": pa.array([run_id] * rows.num_rows, pa.string())}, schema=ATTEMPTS)


def refusal_rejects(refused: list[dict], round_index: int, run_id: str) -> pa.Table:
    """The `rejects` rows of items refused before any stage saw them (corpus listing: `input_key`, stage ingest;
    pairing: `item_id` and `stage`)."""
    rows = [dict(item_id=r.get("item_id") or r["input_key"], round=round_index, stage=r.get("stage", "ingest"),
                 reason=r["reason"], detail=r.get("detail"), identity=r.get("identity"), path=r.get("path"),
                 run_id=run_id) for r in refused]
    return pa.Table.from_pylist(rows, schema=REJECTS)


# Each TRIPLES column and the generation row column it is: the candidate's, its QC decision's, S's and T's.
TRIPLE_FROM_ROW = {
    "triple_id": "candidate_id", "round": "round", "identity_i": "identity_i", "identity_j": "identity_j",
    "expression": "expression", "s_source_id": "s_source_id", "s_path": "s_aligned_path",
    "s_sha256": "s_aligned_sha256", "r_path": "reference_path", "r_sha256": "reference_sha256",
    "t_source_id": "target_source_id", "t_path": "t_aligned_path", "t_sha256": "t_aligned_sha256",
    "s_embedding": "s_embedding", "id_sim_rt": "id_sim_rt", "id_sim_rj": "id_sim_rj", "expr_dist_rt": "expr_dist_rt",
    "sharpness": "sharpness", "seed": "seed", "expression_model": "expression_model",
    "expression_model_sha256": "expression_model_sha256", "swap_model": "swap_model",
    "swap_model_sha256": "swap_model_sha256", "identity_model": "identity_model",
    "identity_model_sha256": "identity_model_sha256", "thresholds": "thresholds", "run_id": "run_id",
    "config_fingerprint": "config_fingerprint", "decision_version": "decision_version",
    **{name: name for name in TRIPLE_SCORES}}


def triples_table(accepted: pa.Table) -> pa.Table:
    """The `triples` rows of accepted generation rows (columns named as in a generation row: TRIPLE_FROM_ROW)."""
    return conform(pa.table({name: accepted[TRIPLE_FROM_ROW[name]] for name in TRIPLES.names}), TRIPLES)
