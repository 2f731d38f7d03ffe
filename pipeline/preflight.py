"""Checks and housekeeping before (and after) a run touches anything: the corpus and output locations, which data
version (run id) a corpus listing belongs to, and temp files left by killed or failed writes."""

from __future__ import annotations

import logging
import os
import uuid

from core.location import Location
from manifests.runs import read_run_info
from pipeline.config import PipelineConfig
from pipeline.exits import LocationError
from stages.corpus import CorpusError, CorpusListing, list_corpus

log = logging.getLogger(__name__)

# Temp files of atomic writes (manifests/store.py atomic_write_bytes): `<file>.tmp-<uuid hex>`.
TEMP_PATTERNS = ("images/*/*.tmp-*", "manifests/_commits/*.json.tmp-*", "manifests/*/*.tmp-*", "*.tmp-*",
                 "adapters/*/*.tmp-*", "adapters/*/*/*.tmp-*")


def list_corpus_or_fail(cfg: PipelineConfig) -> CorpusListing:
    """The corpus listing; a missing or unreadable root or index is a LocationError (nothing started yet)."""
    try:
        return list_corpus(cfg.corpus)
    except CorpusError as err:
        raise LocationError(str(err)) from None
    except PermissionError as err:
        raise LocationError(f"corpus root {cfg.corpus.root!r} is not readable: {err}") from None


def check_output_root(cfg: PipelineConfig) -> None:
    """The output root must be a folder (or creatable) and writable; checked with a real write."""
    out = cfg.output_location()
    root, path = out.url, out.path
    if not out.is_local:
        return  # object stores: credentials and bucket are checked by the first write (the run lock)
    if os.path.exists(path) and not os.path.isdir(path):
        raise LocationError(f"output root {root!r} is a file, not a folder")
    probe = os.path.join(path, f".ciep-write-probe-{uuid.uuid4().hex}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"ok")
        os.remove(probe)
    except OSError as err:
        raise LocationError(f"output root {root!r} is not writable: {err.strerror or err}") from None


def pin_data_version(cfg: PipelineConfig, listing: CorpusListing) -> PipelineConfig:
    """The config with the run id pinned to this corpus version.

    A run id holds one corpus version: the listing digest recorded in its run.json. When the corpus has
    changed since (grown, shrunk, files replaced by others of another size), the run goes to the new data
    version `<run id>-c<digest>`, planned from scratch like a fresh run of that corpus; the old run is kept
    as it was."""
    run_id = cfg.resolved_run_id()
    info = read_run_info(cfg.output_location().join(run_id))
    recorded = (info or {}).get("corpus_digest")
    if recorded and listing.digest and recorded != listing.digest:
        new_id = f"{run_id}-c{listing.digest[:8]}"
        log.info("the corpus changed since run %s was made (listing %s, now %s): this is data version %s",
                 run_id, recorded, listing.digest, new_id)
        run_id = new_id
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_id": run_id})})


def sweep_temp_files(run: Location) -> list[str]:
    """Delete the temp files of interrupted atomic writes under a run (only while holding its lock)."""
    fs, root = run.fs, run.path
    removed: list[str] = []
    for pattern in TEMP_PATTERNS:
        for path in fs.glob(f"{root}/{pattern}"):
            try:
                fs.rm_file(path)
                removed.append(path)
            except FileNotFoundError:
                pass
    if removed:
        log.info("removed %d temp file(s) of interrupted writes", len(removed))
    return removed
