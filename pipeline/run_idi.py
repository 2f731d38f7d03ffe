"""Run IDI rounds: `python pipeline/run_idi.py [--config configs/demo.yaml] [--rounds N] [--set key=value ...]`.

The same command runs locally (a local Ray is started) and under `ray job submit ... -- python
pipeline/run_idi.py`, where it joins the job's cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import ConfigError, quiet_credential_loggers  # noqa: E402
from core.faults import maybe_inject  # noqa: E402
from manifests.lock import RunLock, RunLockedError  # noqa: E402
from manifests.runs import now_iso, read_run_info, write_run_info  # noqa: E402
from manifests.store import ManifestStore  # noqa: E402
from pipeline.commit import StageFailureError  # noqa: E402
from pipeline.config import PipelineConfig, load_config  # noqa: E402
from pipeline.exits import EXIT_TRANSIENT, report  # noqa: E402
from pipeline.ingest_phase import run_ingest  # noqa: E402
from pipeline.planning.same_person import resolve_from_store  # noqa: E402
from pipeline.preflight import check_output_root, list_corpus_or_fail, pin_data_version, sweep_temp_files  # noqa: E402
from pipeline.ray_adapter import init_ray  # noqa: E402
from pipeline.retry import pending_retries  # noqa: E402
from pipeline.rounds import run_rounds  # noqa: E402
from pipeline.summary import format_summary, summarize  # noqa: E402
from qc.identity_calibration import identity_calibration_record  # noqa: E402
from qc.redecide import current_version, redecide, thresholds_differ  # noqa: E402
from qc.run_thresholds import resolve_for_store  # noqa: E402
from qc.selftest_record import record_selftest  # noqa: E402
from stages.corpus import CorpusListing  # noqa: E402

log = logging.getLogger("ciep")


class RunConflictError(RuntimeError):
    """The run id exists with a different data-defining config."""


def prepare_run(cfg: PipelineConfig, corpus_digest: str | None = None) -> tuple[str, ManifestStore, dict]:
    """Create or reopen the run folder; refuse to mix configs under one run id."""
    run_id = cfg.resolved_run_id()
    run = cfg.run_location()
    url = run.url
    info = read_run_info(run)
    fingerprint = cfg.data_fingerprint()
    if info and info.get("config_fingerprint") != fingerprint:
        raise RunConflictError(
            f"run {run_id!r} at {url} was made with config fingerprint {info.get('config_fingerprint')}, "
            f"this config has {fingerprint}; choose another run.run_id")
    if not info:
        info = dict(run_id=run_id, created_at=now_iso(), config_fingerprint=fingerprint,
                    config=cfg.redacted_dump(), invocations=[])
    if corpus_digest and not info.get("corpus_digest"):
        info["corpus_digest"] = corpus_digest  # the corpus version this run id holds (pipeline/preflight.py)
    store = ManifestStore.open(run)
    if cfg.run.fault_injection is not None:  # testing hook (core/faults.py)
        store.before_marker = lambda shard: maybe_inject(cfg.run.fault_injection, "commit", shard)
    store.sweep_orphans()
    sweep_temp_files(run)
    return url, store, info


def run_idi(cfg: PipelineConfig) -> dict:
    """Ingest, then run cfg.run.rounds rounds; returns the summary read back from the manifests.

    The corpus is listed and the output root checked first (before Ray starts or a run folder exists); the run
    id is pinned to the corpus version (pipeline/preflight.py pin_data_version). Holds the run folder's lock
    (manifests/lock.py) throughout: a second driver on the same run id gets RunLockedError before touching
    anything; the lock of a killed driver is taken over."""
    quiet_credential_loggers()
    listing = list_corpus_or_fail(cfg)
    check_output_root(cfg)
    cfg = pin_data_version(cfg, listing)
    with RunLock(cfg.run_location()):
        return _run_idi_locked(cfg, listing)


def _run_idi_locked(cfg: PipelineConfig, listing: CorpusListing) -> dict:
    started = time.monotonic()
    url, store, info = prepare_run(cfg, listing.digest)
    info["updated_at"] = now_iso()
    write_run_info(cfg.run_location(), info)
    init_ray(cfg.ray)
    ingest = run_ingest(cfg, store, url, listing)
    info["identity_calibration"] = identity_calibration_record(cfg.qc, store)
    same_person = resolve_from_store(cfg.pairing, store)
    info["identity_calibration"]["same_person"] = same_person.record()
    resolved = resolve_for_store(cfg.qc, store)  # every calibration of the run, once
    info["mouth_calibration"] = resolved.mouth_record()  # qc/mouth_calibration.py
    info["selftest"] = record_selftest(cfg.qc, store, info["run_id"], cfg.run.seed,  # the run's validity card
                                       same_person.value, resolved)
    write_run_info(cfg.run_location(), info)
    items = ingest.todo
    if pending_retries(store).get("ingest"):  # a plan is made from a complete ingest only (pipeline/retry.py)
        log.warning("ingest has items left to retry (transient errors): no round is planned until a rerun")
    else:
        items += run_rounds(cfg, store, url)
    if thresholds_differ(store, cfg.qc):  # QC thresholds changed since the last decision: re-decide, no regeneration
        redecide(store, cfg.qc)
        info.setdefault("decisions", []).append(dict(at=now_iso(), decision_version=current_version(store),
                                                     reason="thresholds changed"))
    store.compact()  # many small commit shards -> few large ones, for DuckDB (no-op on small runs)
    sweep_temp_files(cfg.run_location())
    wall = time.monotonic() - started
    summary = summarize(store)
    summary["pending_retries"] = pending_retries(store)
    summary["selftest_max_false_pass"] = ((info.get("selftest") or {}).get("expression") or {}).get("max_false_pass")
    timing = dict(run_id=info["run_id"], run_url=url, wall_s=wall, items=items)
    info["invocations"].append(dict(finished_at=now_iso(), wall_s=round(wall, 2), items=items))
    info["updated_at"] = now_iso()
    info["summary"] = summary
    write_run_info(cfg.run_location(), info)
    return dict(summary=summary, timing=timing)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_idi", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML config (local path or fsspec URL); default configs/demo.yaml")
    p.add_argument("--rounds", type=int, help="number of IDI rounds (overrides run.rounds)")
    p.add_argument("--run-id", help="run id (overrides run.run_id)")
    p.add_argument("--allow-partial", action="store_true",
                   help="exit 0 even when items that failed with transient errors are left for a rerun")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set qc.expression.max_distance=0.2")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.rounds is not None:
        overrides.append(f"run.rounds={args.rounds}")
    if args.run_id:
        overrides.append(f"run.run_id={args.run_id}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    try:
        result = run_idi(cfg)
    except (RunLockedError, RunConflictError, StageFailureError) as err:
        return report("run_idi", err)
    except Exception as err:  # noqa: BLE001 - one line and an exit status (pipeline/exits.py), not a traceback
        return report("run_idi", err)
    print(format_summary(result["summary"], result["timing"]))
    pending = result["summary"].get("pending_retries")
    if pending and not args.allow_partial:
        print(f"run_idi: finished with items that failed with transient errors and are left to retry "
              f"({', '.join(f'{k}: {v}' for k, v in pending.items())}); rerun to retry them "
              f"(--allow-partial exits 0)", file=sys.stderr)
        return EXIT_TRANSIENT
    return 0


if __name__ == "__main__":
    sys.exit(main())
