"""Shared helpers for the fault, bad-input and object-storage tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from manifests.store import ManifestStore
from pipeline.config import PipelineConfig, load_config

ID_COLUMNS = {"triples": "triple_id", "qc": "candidate_id", "candidates": "candidate_id", "sources": "source_id",
              "rejects": "item_id"}


def round_config(corpus: Path | str, output_root: Path | str, *extra: str) -> PipelineConfig:
    # a corpus of a few identities cannot certify an expression class (qc/selftest.py fails closed and nothing would
    # be planned): these tests turn the calibrated check off; tests/qc/test_selftest_round.py runs it
    return load_config(overrides=[f"corpus.root={corpus}", f"run.output_root={output_root}", "run.name=hard",
                                  "qc.expression.calibrate=false", *extra])


def rows_that_matter(store: ManifestStore, table: str) -> pa.Table:
    """A table's committed rows, sorted by id, without the columns that name where the run was written."""
    t = store.read_table(table)
    keep = [c for c in t.column_names if not c.endswith("path")]
    return t.select(keep).sort_by([(ID_COLUMNS[table], "ascending")]).replace_schema_metadata(None)


def uncommitted_files(store: ManifestStore) -> list[str]:
    """Shard files under manifests/ that no commit marker names."""
    referenced = {f"{store.manifests_dir}/{rel}" for m in store.markers() for rel in m["files"].values()}
    files = [p for p in store.fs.find(store.manifests_dir) if "/_commits/" not in p]
    return sorted(p for p in files if p not in referenced)
