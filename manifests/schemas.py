"""Arrow schemas of every manifest table (and of the round plan), in one place. Writers take these explicitly;
nothing is inferred."""

from __future__ import annotations

import pyarrow as pa

# 2: attempt/transient columns, raw_name, attempts and identity_clusters tables; 3: qc contrast; 4: qc_selftest
# table, qc expr_class / expr_class_score / mouth_realism, candidates.swap_keep_regions, triples carry every QC
# score (TRIPLE_SCORES); 5: candidates.mouth_source_id (j's mouth donor) and transfer_mouth_rule; 6: qc (and
# triples) mouth_tint
SCHEMA_VERSION = "6"

_f32_list = pa.list_(pa.float32())


def _versioned(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={b"ciep.table": name.encode(), b"ciep.schema_version": SCHEMA_VERSION.encode()})


# One row per corpus image that was usable.
SOURCES = _versioned("sources", [
    pa.field("source_id", pa.string(), nullable=False),
    pa.field("input_key", pa.string(), nullable=False),  # identity/relative path: the ingest work-item key
    pa.field("identity", pa.string(), nullable=False),
    pa.field("expression", pa.string()),  # label from the corpus, or null
    pa.field("path", pa.string(), nullable=False),  # URL of the original image
    pa.field("file_sha256", pa.string(), nullable=False),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("face_box", _f32_list),  # x0, y0, x1, y1 in the original image
    pa.field("aligned_path", pa.string(), nullable=False),
    pa.field("aligned_sha256", pa.string(), nullable=False),
    pa.field("landmarks68", _f32_list),  # 136 floats, aligned-crop coordinates
    pa.field("keypoints5", _f32_list),  # 10 floats, aligned-crop coordinates
    pa.field("embedding", _f32_list),  # L2-normalised, model below
    pa.field("embedding_model", pa.string()),
    pa.field("embedding_model_sha256", pa.string()),
    pa.field("detector_model", pa.string()),
    pa.field("detector_model_sha256", pa.string()),
    pa.field("expression_descriptor", _f32_list),
    pa.field("sharpness", pa.float32()),
    pa.field("run_id", pa.string()),
    pa.field("config_fingerprint", pa.string()),
    pa.field("expression_probs", _f32_list),  # 7-class expression net (stages/face/expression_net.py)
    pa.field("expression_net_model", pa.string()),
    pa.field("expression_net_sha256", pa.string()),
    pa.field("raw_name", pa.string()),  # v2: the file name as listed (the expression label is normalised)
    pa.field("attempt", pa.int32()),  # v2: which attempt made the row (1 unless transient errors were retried)
])

# One row per item refused anywhere, with its reason code.
REJECTS = _versioned("rejects", [
    pa.field("item_id", pa.string(), nullable=False),  # input_key for ingest, candidate_id later
    pa.field("round", pa.int32(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("identity", pa.string()),
    pa.field("path", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("attempt", pa.int32()),  # v2
    pa.field("transient", pa.bool_()),  # v2: a stage_error from a transient error, retried max_attempts times
])

# v2: one row per failed attempt that a rerun retries (a transient stage error, stages/errors.py). Not a
# decision: the item stays undecided (in no other table) until an attempt succeeds or the last one fails.
ATTEMPTS = _versioned("attempts", [
    pa.field("item_id", pa.string(), nullable=False),  # input_key for ingest, candidate_id later
    pa.field("round", pa.int32(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("attempt", pa.int32(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("identity", pa.string()),
    pa.field("path", pa.string()),
    pa.field("run_id", pa.string()),
])

# v2: identities that are one person under several names (embedding similarity), clustered; releases split by
# cluster. One row per identity with usable sources.
IDENTITY_CLUSTERS = _versioned("identity_clusters", [
    pa.field("identity", pa.string(), nullable=False),
    pa.field("cluster", pa.string(), nullable=False),  # the cluster's first identity in sorted order
    pa.field("cluster_size", pa.int32(), nullable=False),
    pa.field("max_similarity", pa.float32()),  # highest centroid cosine to another identity of the cluster
    pa.field("threshold", pa.float32()),
    pa.field("embedding_model", pa.string()),
    pa.field("run_id", pa.string()),
])

# One row per generated (or attempted) reference R.
CANDIDATES = _versioned("candidates", [
    pa.field("candidate_id", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("identity_i", pa.string(), nullable=False),
    pa.field("identity_j", pa.string(), nullable=False),
    pa.field("expression", pa.string()),
    pa.field("target_source_id", pa.string(), nullable=False),
    pa.field("s_source_id", pa.string(), nullable=False),
    pa.field("carrier_source_id", pa.string(), nullable=False),  # j's face re-posed / identity condition
    pa.field("swap_source_id", pa.string(), nullable=False),  # j's face swapped in
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("expression_backend", pa.string()),
    pa.field("expression_model", pa.string()),
    pa.field("expression_model_sha256", pa.string()),
    pa.field("transfer_path", pa.string()),
    pa.field("transfer_sha256", pa.string()),
    pa.field("swap_backend", pa.string()),
    pa.field("swap_model", pa.string()),
    pa.field("swap_model_sha256", pa.string()),
    pa.field("reference_path", pa.string()),
    pa.field("reference_sha256", pa.string()),
    pa.field("swap_target_face", pa.string()),  # "detected" or "target_landmarks"
    pa.field("status", pa.string(), nullable=False),
    pa.field("reject_stage", pa.string()),
    pa.field("reject_reason", pa.string()),
    pa.field("reject_detail", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("config_fingerprint", pa.string()),
    pa.field("attempt", pa.int32()),  # v2
    pa.field("swap_keep_regions", pa.string()),  # v4: identity_swap.keep_regions, comma-joined ("": none kept)
    pa.field("mouth_source_id", pa.string()),  # v5: j's photo in T's mouth state, the transfer's mouth donor
    pa.field("transfer_mouth_rule", pa.string()),  # v5: the CPU transfer's mouth rule (null for other backends)
])

# One QC decision per candidate: every score kept, one reason per failed check.
QC = _versioned("qc", [
    pa.field("candidate_id", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("accepted", pa.bool_(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),  # "accepted" or the first failed check
    pa.field("reasons", pa.list_(pa.string()), nullable=False),  # every failed check
    pa.field("face_found", pa.bool_()),
    pa.field("id_sim_rt", pa.float32()),  # identity leak: R vs T
    pa.field("id_sim_rj", pa.float32()),  # swap success: R vs swap source j
    pa.field("expr_dist_rt", pa.float32()),
    pa.field("sharpness", pa.float32()),
    pa.field("identity_backend", pa.string()),
    pa.field("identity_model", pa.string()),
    pa.field("identity_model_sha256", pa.string()),
    pa.field("thresholds", pa.string()),  # JSON of the thresholds applied
    pa.field("run_id", pa.string()),
    # issue 10: more scores (qc/stage.py), the learned expression net, and the decision version
    # (0 when generated; `ciep qc redecide` appends version n+1 for every candidate; views show the latest)
    *[pa.field(n, pa.float32()) for n in (
        "id_margin_ji", "id_margin_j", "expr_prob_dist_rt", "expr_prob_dist_ct", "expr_prob_dist_rc", "expr_gain",
        "r_mouth_aspect", "t_mouth_aspect", "r_teeth", "t_teeth", "r_lip_line", "mouth_seam",
        "mouth_sharpness_ratio")],
    pa.field("id_nearest_other", pa.string()),
    pa.field("r_expr_probs", _f32_list),
    pa.field("t_expr_probs", _f32_list),
    pa.field("carrier_expr_probs", _f32_list),
    pa.field("r_expr_label", pa.string()),
    pa.field("t_expr_label", pa.string()),
    pa.field("carrier_expr_label", pa.string()),
    pa.field("expression_net_model", pa.string()),
    pa.field("expression_net_sha256", pa.string()),
    pa.field("decision_version", pa.int32()),
    pa.field("attempt", pa.int32()),  # v2
    pa.field("expr_contrast_st", pa.float32()),  # v3: R on the axis from S's expression to T's
    pa.field("s_expr_probs", _f32_list),  # v3
    pa.field("expr_class", pa.string()),  # v4: T's expression class (corpus label, else the net's)
    pa.field("expr_class_score", pa.float32()),  # v4: R's calibrated log-odds of expr_class (qc/selftest.py)
    pa.field("mouth_realism", pa.float32()),  # v4: R's mouth's distance to the run's real mouths
    pa.field("mouth_reference_diff", pa.float32()),  # v4: R's mouth's artifacts beyond its carrier's
    pa.field("mouth_damage", pa.float32()),  # v4: the run's damage detector's log-odds for R's mouth
    pa.field("mouth_tint", pa.float32()),  # v6: colour in R's mouth over its perioral skin's (CIELAB chroma)
])

# The four scores every triples table has had (summary medians, release diffs of old releases).
QC_SCORES = ("id_sim_rt", "id_sim_rj", "expr_dist_rt", "sharpness")
# Every numeric QC score, carried from qc into triples, releases and exports (v4): what decided each triple. A
# score column added to `qc` is carried without touching this list.
TRIPLE_SCORES = tuple(f.name for f in QC if pa.types.is_floating(f.type))

# The columns the QC stage adds to a row: the qc table without its keys and the attempt (carried from the work
# item), nullable while rows are in flight.
QC_FIELDS = tuple(f.with_nullable(True) for f in QC if f.name not in ("candidate_id", "round", "run_id", "attempt"))

# Accepted training triples {S, R, T}: what trainers read.
TRIPLES = _versioned("triples", [
    pa.field("triple_id", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("identity_i", pa.string(), nullable=False),
    pa.field("identity_j", pa.string(), nullable=False),
    pa.field("expression", pa.string()),
    pa.field("s_source_id", pa.string(), nullable=False),
    pa.field("s_path", pa.string(), nullable=False),
    pa.field("s_sha256", pa.string(), nullable=False),
    pa.field("r_path", pa.string(), nullable=False),
    pa.field("r_sha256", pa.string(), nullable=False),
    pa.field("t_source_id", pa.string(), nullable=False),
    pa.field("t_path", pa.string(), nullable=False),
    pa.field("t_sha256", pa.string(), nullable=False),
    pa.field("s_embedding", _f32_list),
    pa.field("id_sim_rt", pa.float32()),
    pa.field("id_sim_rj", pa.float32()),
    pa.field("expr_dist_rt", pa.float32()),
    pa.field("sharpness", pa.float32()),
    pa.field("seed", pa.int64()),
    pa.field("expression_model", pa.string()),
    pa.field("expression_model_sha256", pa.string()),
    pa.field("swap_model", pa.string()),
    pa.field("swap_model_sha256", pa.string()),
    pa.field("identity_model", pa.string()),
    pa.field("identity_model_sha256", pa.string()),
    pa.field("thresholds", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("config_fingerprint", pa.string()),
    pa.field("decision_version", pa.int32()),  # the qc decision version that accepted it
    # v4: the other QC scores (margins, learned expression distances, contrast, mouth scores), null in older runs
    *[pa.field(n, pa.float32()) for n in TRIPLE_SCORES if n not in QC_SCORES],
])

# Which data made which adapter, and which adapter made which data.
LINEAGE = _versioned("lineage", [
    pa.field("round", pa.int32(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),  # "generated_with" | "trained_on"
    pa.field("adapter_id", pa.string()),
    pa.field("adapter_sha256", pa.string()),
    pa.field("adapter_path", pa.string()),
    pa.field("data_round", pa.int32()),  # the round whose data is meant
    pa.field("triples", pa.int64()),
    pa.field("detail", pa.string()),  # JSON
    pa.field("run_id", pa.string()),
])

# The run's QC self-test (qc/selftest.py): real pseudo-triples judged by QC's code, one row per check, class of T
# and measure (right_pass, wrong_pass, auc for the expression check).
QC_SELFTEST = _versioned("qc_selftest", [
    pa.field("run_id", pa.string()),
    pa.field("check", pa.string(), nullable=False),  # expression | mouth | identity
    pa.field("label", pa.string()),  # T's expression class, or null for a corpus-wide figure
    pa.field("measure", pa.string(), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("ci_low", pa.float64()),  # 95 % Wilson interval of a rate
    pa.field("ci_high", pa.float64()),
    pa.field("n", pa.int64()),  # trials behind the value
    pa.field("judged", pa.bool_()),  # false: the class is unjudgeable on this corpus (see note)
    pa.field("threshold", pa.float64()),
    pa.field("note", pa.string()),
    pa.field("calibration_sha256", pa.string()),
])

# A labelled audit of the run's generated R (qc/audit.py, `ciep audit`): one row per sampled R and its label by eye.
AUDIT = _versioned("audit", [
    pa.field("run_id", pa.string()),
    pa.field("candidate_id", pa.string(), nullable=False),
    pa.field("decision_version", pa.int32()),  # the QC decision the sample was drawn from
    pa.field("stratum", pa.string(), nullable=False),  # accepted | rejected
    pa.field("label", pa.string(), nullable=False),  # artificial | fine | skip
    pa.field("sample_seed", pa.int64()),
    pa.field("sheet_index", pa.int32()),
    pa.field("labelled_by", pa.string()),
    pa.field("labelled_at", pa.string()),
])

TABLES: dict[str, pa.Schema] = {
    "sources": SOURCES,
    "rejects": REJECTS,
    "candidates": CANDIDATES,
    "qc": QC,
    "triples": TRIPLES,
    "lineage": LINEAGE,
    "attempts": ATTEMPTS,
    "identity_clusters": IDENTITY_CLUSTERS,
    "qc_selftest": QC_SELFTEST,
    "audit": AUDIT,
}

# Nullable columns added in schema version 2: a writer that does not know them gets nulls.
ADDED_IN_V2 = frozenset({"raw_name", "attempt", "transient"})
# Nullable triples columns added in version 4 and later (the other QC scores): a row without them gets nulls.
ADDED_IN_V4 = frozenset(TRIPLE_SCORES) - frozenset(QC_SCORES)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast a table's columns to a manifest schema; a missing column is an error."""
    missing = [f.name for f in schema if f.name not in table.column_names
               and not (f.name in ADDED_IN_V2 | ADDED_IN_V4 and f.nullable)]
    if missing:
        raise ValueError(f"table for {schema.metadata[b'ciep.table'].decode()} lacks columns {missing}")
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) if f.name in table.column_names
                                 else pa.nulls(table.num_rows, f.type) for f in schema], schema=schema)


def with_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The schema's columns of `table`, absent ones as nulls (e.g. scores a stand-in QC stage does not make)."""
    cols = [table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, names=[f.name for f in schema])


# The round plan (pipeline/planning/): not a manifest table, the rows the generation phase reads from the plan files.
# One row per candidate: T, S, the carrier, the swap source and the mouth donor with their images, landmarks and
# embeddings.
PLAN_SCHEMA = pa.schema([
    pa.field("candidate_id", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("identity_i", pa.string(), nullable=False),
    pa.field("identity_j", pa.string(), nullable=False),
    pa.field("expression", pa.string()),
    pa.field("target_source_id", pa.string(), nullable=False),
    pa.field("s_source_id", pa.string(), nullable=False),
    pa.field("carrier_source_id", pa.string(), nullable=False),
    pa.field("swap_source_id", pa.string(), nullable=False),
    pa.field("t_aligned_path", pa.string()),
    pa.field("t_aligned_sha256", pa.string()),
    pa.field("s_aligned_path", pa.string()),
    pa.field("s_aligned_sha256", pa.string()),
    pa.field("carrier_aligned_path", pa.string()),
    pa.field("swap_aligned_path", pa.string()),
    pa.field("t_landmarks68", pa.list_(pa.float32())),
    pa.field("s_landmarks68", pa.list_(pa.float32())),
    pa.field("carrier_landmarks68", pa.list_(pa.float32())),
    pa.field("swap_landmarks68", pa.list_(pa.float32())),
    pa.field("t_embedding", pa.list_(pa.float32())),
    pa.field("s_embedding", pa.list_(pa.float32())),
    pa.field("j_embedding", pa.list_(pa.float32())),
    pa.field("t_descriptor", pa.list_(pa.float32())),
    pa.field("mouth_source_id", pa.string()),
    pa.field("mouth_aligned_path", pa.string()),
    pa.field("mouth_landmarks68", pa.list_(pa.float32())),
    pa.field("status", pa.string()),
    pa.field("reject_stage", pa.string()),
    pa.field("reject_reason", pa.string()),
    pa.field("reject_detail", pa.string()),
])

# The sources columns a plan row is made from.
PLAN_SOURCE_COLUMNS = ["source_id", "input_key", "identity", "expression", "path", "file_sha256",
                       "aligned_path", "aligned_sha256", "landmarks68", "embedding", "expression_descriptor"]

# The plan as the planner streams it (the rows of the plan files): the scalar columns it decides plus the row of each
# image in the sources (in the order they were read); gather_plan turns such rows into PLAN_SCHEMA rows.
PLAN_INDEX_SCHEMA = pa.schema([
    pa.field("candidate_id", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("identity_i", pa.string(), nullable=False),
    pa.field("identity_j", pa.string(), nullable=False),
    pa.field("t_row", pa.int64(), nullable=False),
    pa.field("s_row", pa.int64(), nullable=False),
    pa.field("carrier_row", pa.int64(), nullable=False),
    pa.field("swap_row", pa.int64(), nullable=False),
    pa.field("mouth_row", pa.int64(), nullable=False),
])
# The PLAN_INDEX_SCHEMA column that holds each image role's sources row.
PLAN_ROLE_ROWS = {"t": "t_row", "s": "s_row", "carrier": "carrier_row", "swap": "swap_row", "mouth": "mouth_row"}
# What gather_plan copies from the sources into PLAN_SCHEMA rows (landmarks, embeddings, descriptors, ids and paths):
# it never lives on the driver at scale (pipeline/planning/ray_features.py keeps it in Ray's object store).
PLAN_FEATURE_COLUMNS = ["source_id", "expression", "aligned_path", "aligned_sha256", "landmarks68", "embedding",
                        "expression_descriptor"]
