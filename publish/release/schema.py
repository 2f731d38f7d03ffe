"""Schemas of a release: its manifest (the run's `triples` plus file facts and split) and the exported row."""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field, field_validator

from core.config import Strict
from manifests.schemas import QC_SCORES, TABLES, TRIPLE_SCORES, TRIPLES


class ReleaseConfig(Strict):
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    license: str = "cc-by-4.0"

    @field_validator("splits")
    @classmethod
    def _sum_to_one(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(r < 0 for r in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError("split ratios must be non-negative and sum to 1")
        return v


# 2: images live in the releases root's shared pool (publish/image_pool.py), `*_file` paths relative to the
# release folder ("../_pool/images/..."); S and T landmarks copied from the run's sources.
# 3: triples carry every QC score (manifests/schemas.py TRIPLE_SCORES: margins, learned expression distances,
# contrast, mouth scores); readers of an older release get nulls for them.
RELEASE_FORMAT_VERSION = "3"

# The release manifest: every column of a run's triple (paths there are the run's, kept for provenance),
# plus where each image lives inside the release (content-addressed), its size, and the triple's split.
RELEASE_TRIPLES = pa.schema(
    list(TRIPLES) + [
        pa.field("split", pa.string(), nullable=False),
        pa.field("release", pa.string(), nullable=False),
        pa.field("s_file", pa.string(), nullable=False),  # relative to the release root
        pa.field("s_bytes", pa.int64(), nullable=False),
        pa.field("r_file", pa.string(), nullable=False),
        pa.field("r_bytes", pa.int64(), nullable=False),
        pa.field("t_file", pa.string(), nullable=False),
        pa.field("t_bytes", pa.int64(), nullable=False),
        pa.field("s_landmarks68", pa.list_(pa.float32())),  # 68 (x, y) in S's aligned-crop pixels, or null
        pa.field("t_landmarks68", pa.list_(pa.float32())),  # the same for T
    ],
    metadata={b"ciep.table": b"release_triples", b"ciep.schema_version": RELEASE_FORMAT_VERSION.encode()},
)

# A release store reads and writes these; the other tables keep the run schemas (lineage is copied).
RELEASE_TABLES: dict[str, pa.Schema] = {**TABLES, "triples": RELEASE_TRIPLES}

# Image roles: manifest prefix -> exported column name.
IMAGE_ROLES: dict[str, str] = {"s": "source", "r": "reference", "t": "target"}
# Export columns computed at export time, not read from the release manifest.
DERIVED_COLUMNS = ("text", "target_mask")

# The row every export writes (hf-parquet columns, webdataset .json, imagefolder metadata), in order.
# (name, kind): kind is an Arrow type or "image".
_IMAGE = "image"
EXPORT_COLUMNS: list[tuple[str, pa.DataType | str]] = [
    ("triple_id", pa.string()),
    ("source", _IMAGE),  # S: identity i, another expression
    ("reference", _IMAGE),  # R: identity j wearing T's expression
    ("target", _IMAGE),  # T: identity i, expression e
    ("round", pa.int32()),
    ("identity_i", pa.string()),
    ("identity_j", pa.string()),
    ("expression", pa.string()),
    ("text", pa.string()),  # caption, the same in every format
    ("target_mask", _IMAGE),  # T's face mask (convex hull of its 68 landmarks, 8-bit L PNG), null without landmarks
    ("s_landmarks68", pa.list_(pa.float32())),  # 136 floats: 68 (x, y) in the aligned crop, or null
    ("t_landmarks68", pa.list_(pa.float32())),
    ("s_embedding", pa.list_(pa.float32())),
    ("id_sim_rt", pa.float32()),
    ("id_sim_rj", pa.float32()),
    ("expr_dist_rt", pa.float32()),
    ("sharpness", pa.float32()),
    # format 3: the other scores that decide (margins, learned expression distances, contrast, mouth), null before
    *[(n, pa.float32()) for n in TRIPLE_SCORES if n not in QC_SCORES],
    ("seed", pa.int64()),
    ("s_sha256", pa.string()),
    ("r_sha256", pa.string()),
    ("t_sha256", pa.string()),
    ("expression_model", pa.string()),
    ("expression_model_sha256", pa.string()),
    ("swap_model", pa.string()),
    ("swap_model_sha256", pa.string()),
    ("identity_model", pa.string()),
    ("identity_model_sha256", pa.string()),
    ("thresholds", pa.string()),
    ("run_id", pa.string()),
]

IMAGE_STRUCT = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

_HF_DTYPES = {pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64", pa.float32(): "float32",
              pa.float64(): "float64", pa.bool_(): "bool"}


def hf_feature(kind: pa.DataType | str) -> dict:
    """The `datasets` feature dict of one export column (Sequence, not List, so datasets 3.x reads it)."""
    if kind == _IMAGE:
        return {"_type": "Image"}
    assert isinstance(kind, pa.DataType)
    if pa.types.is_list(kind):
        return {"feature": hf_feature(kind.value_type), "_type": "Sequence"}
    return {"dtype": _HF_DTYPES[kind], "_type": "Value"}


def hf_features() -> dict[str, dict]:
    return {name: hf_feature(kind) for name, kind in EXPORT_COLUMNS}


def card_dtype(kind: pa.DataType | str) -> str | dict:
    """The dtype a dataset card's `dataset_info.features` lists for a column."""
    if kind == _IMAGE:
        return "image"
    assert isinstance(kind, pa.DataType)
    if pa.types.is_list(kind):
        return {"sequence": card_dtype(kind.value_type)}
    return _HF_DTYPES[kind]


def export_arrow_schema() -> pa.Schema:
    """Arrow schema of the hf-parquet export, with the `huggingface` metadata `datasets` reads features from."""
    import json

    fields = [pa.field(name, IMAGE_STRUCT if kind == _IMAGE else kind) for name, kind in EXPORT_COLUMNS]
    meta = {b"huggingface": json.dumps({"info": {"features": hf_features()}}).encode()}
    return pa.schema(fields, metadata=meta)
