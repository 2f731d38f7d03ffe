"""The `ciep` command: every subcommand is wired here, the one place that loads the config for them.

`run` and `train` are the run's own entry points (main(argv) in pipeline/). The others are implemented below
the run (qc/, publish/, manifests/), which never import pipeline/: this module parses their arguments, loads
the config and hands them what they need from it, above all the output root as a storage Location that carries
`run.storage_options` (so a custom S3 endpoint reaches every command).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import sys
from collections.abc import Callable

import duckdb

from core.config import ConfigError, quiet_credential_loggers
from core.location import Location
from manifests.fsck import first_damaged
from manifests.integrity import DamagedManifestError
from manifests.query import NAMED_QUERIES, connect, format_table, run_query
from manifests.runs import find_run
from manifests.store import ManifestStore
from pipeline.config import PipelineConfig, load_config
from pipeline.exits import EXIT_NOT_FOUND, UsageError, report

# The run's own commands: module -> main(argv: list[str]) -> int.
RUN_COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pipeline.run_idi", "run IDI rounds (same as python pipeline/run_idi.py)"),
    "train": ("pipeline.train_adapter", "train an E-Adapter on a run's or release's triples"),
}


def output_roots(cfg: PipelineConfig, args: argparse.Namespace) -> tuple[Location, Location]:
    """(output root, releases root) from --output-root/--releases-root or the config, with run.storage_options."""
    configured = cfg.run.location  # the one place the run's storage options become a Location
    given = getattr(args, "output_root", None)
    output_root = configured.at(given) if given else configured
    releases = getattr(args, "releases_root", None)
    return output_root, configured.at(releases) if releases else output_root.join("releases")


def _blame_damage(stores: list[ManifestStore]) -> None:
    """After DuckDB failed reading: DamagedManifestError naming the first bad manifest file, if there is one.
    DuckDB does not verify Parquet page checksums, nor say which file it could not read."""
    for store in stores:
        bad = first_damaged(store)
        if bad is not None:
            raise DamagedManifestError(bad.path, bad.what)


def _connect(stores: dict[str, ManifestStore]) -> duckdb.DuckDBPyConnection:
    """manifests.query.connect, naming a damaged file when DuckDB cannot read one."""
    try:
        return connect(stores)
    except duckdb.Error:
        _blame_damage(list(stores.values()))
        raise


def _query(con: duckdb.DuckDBPyConnection, sql: str,
           stores: list[ManifestStore]) -> tuple[list[str], list[tuple]]:
    """run_query with one-line usage errors: a mistyped named query, or SQL DuckDB cannot run; a query that fails
    on a damaged manifest file names it (DamagedManifestError)."""
    if sql not in NAMED_QUERIES and len(sql.split()) == 1:
        import difflib

        close = difflib.get_close_matches(sql, list(NAMED_QUERIES), n=1)
        raise UsageError(f"no named query {sql!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                         + f"; named queries: {', '.join(NAMED_QUERIES)}; or give SQL text")
    try:
        return run_query(con, sql)
    except duckdb.Error as err:
        if not isinstance(err, (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException)):
            _blame_damage(stores)
        raise UsageError(f"SQL error: {' '.join(str(err).split())}") from None


def query_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ciep query", description="DuckDB SQL over a run's manifests. "
                                "Tables: sources, rejects, candidates, qc, qc_selftest, triples, lineage, audit. "
                                f"Named queries: {', '.join(NAMED_QUERIES)}.")
    p.add_argument("sql", help="SQL text or the name of a named query")
    p.add_argument("--run", help="run id (default: the most recently updated run)")
    p.add_argument("--config", help="config whose run.output_root is searched (default configs/demo.yaml)")
    p.add_argument("--output-root", help="folder or URL holding runs (overrides the config)")
    p.add_argument("--release", action="append", default=[], help="query these releases instead of a run")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    args = p.parse_args(argv)
    output_root, _ = output_roots(load_config(args.config), args)
    if args.release:
        from publish.release.read import release_stores
        stores = release_stores(output_root, args.release)
    else:
        stores = {"": ManifestStore.open(find_run(output_root, args.run))}
    con = _connect(stores)
    cols, rows = _query(con, args.sql, list(stores.values()))
    if args.format == "table":
        print(format_table(cols, rows))
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    else:
        print(json.dumps([dict(zip(cols, r, strict=False)) for r in rows], default=str, indent=1))
    return 0


def calibrate_main(argv: list[str]) -> int:
    from qc.calibrate import calibrate_identity

    p = argparse.ArgumentParser(prog="ciep calibrate-identity",
                                description="Calibrate the identity threshold: same- vs different-identity cosine "
                                            "similarities on a labelled corpus.")
    p.add_argument("--config", help="YAML config (default configs/demo.yaml); its detector/embedder are used")
    p.add_argument("--corpus", required=True, help="folder or URL with one sub-folder of images per identity")
    p.add_argument("--far", type=float, default=0.01, help="false-accept rate for the threshold (default 0.01)")
    p.add_argument("--frr", type=float, default=0.01,
                   help="share of same-identity pairs below the leak threshold (default 0.01)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set qc.identity.backend=arcface")
    p.add_argument("--json", help="also write the result as JSON to this path")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    result = calibrate_identity(cfg, args.corpus, args.far, args.frr)
    sys.stdout.write(result.format() + "\n")
    if not result.separable:
        sys.stderr.write("ciep calibrate-identity: no pair of absolute thresholds separates this corpus; "
                         "leave qc.identity.max_leak_similarity/min_swap_similarity null (gallery margin test)\n")
    if args.json:
        with Location(args.json).open(mode="w") as fh:
            json.dump(result.to_dict(), fh, indent=1)
    return 0


def release_main(argv: list[str]) -> int:
    from publish.release import cli as release_cli

    args = release_cli.build_parser().parse_args(argv)
    cfg = load_config(args.config)
    map_files = None
    if args.cmd == "create" and args.ray:
        from pipeline.publish_on_ray import ray_file_mapper, start_ray

        start_ray(cfg.ray, args.num_cpus)
        map_files = ray_file_mapper()
    return release_cli.run_cli(args, *output_roots(cfg, args), cfg.release, map_files)


def export_main(argv: list[str]) -> int:
    from publish import export

    args = export.build_parser().parse_args(argv)
    cfg = load_config(args.config)
    map_shards = None
    if args.ray:
        from pipeline.publish_on_ray import ray_shard_mapper, start_ray

        start_ray(cfg.ray, args.num_cpus)
        map_shards = ray_shard_mapper()
    return export.run_cli(args, *output_roots(cfg, args), map_shards)


def report_main(argv: list[str]) -> int:
    from publish import report

    args = report.build_parser().parse_args(argv)
    return report.run_cli(args, *output_roots(load_config(args.config), args))


def qc_main(argv: list[str]) -> int:
    """`ciep qc redecide`: re-decide a run from its stored scores with changed qc.* thresholds (no images)."""
    from qc.redecide import redecide

    p = argparse.ArgumentParser(prog="ciep qc", description="Re-decide a run from stored QC scores as a new "
                                "decision version; earlier versions stay queryable (<table>_all views).")
    p.add_argument("action", choices=["redecide"])
    p.add_argument("--run", help="run id (default: the most recently updated run)")
    p.add_argument("--config", help="YAML config (default configs/demo.yaml); its qc section is applied")
    p.add_argument("--output-root", help="folder or URL holding runs (overrides the config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a qc key, e.g. --set qc.expression.max_prob_distance=0.4")
    args = p.parse_args(argv)
    bad = [o for o in args.overrides if not o.startswith("qc.")]
    if bad:
        p.error(f"only qc.* keys can be re-decided without regenerating: {bad}")
    cfg = load_config(args.config, args.overrides)
    output_root, _ = output_roots(cfg, args)
    run = find_run(output_root, args.run)
    res = redecide(ManifestStore.open(run), cfg.qc, run)
    sys.stdout.write(f"decision version {res.version}: {res.accepted}/{res.candidates} accepted, {res.changed} "
                     f"changed, {res.seconds:.2f} s\n")
    return 0


def fsck_main(argv: list[str]) -> int:
    """`ciep fsck`: check a run (or a release) against its checksums; --repair takes what is bad out of a run."""
    from pipeline.fsck_cli import build_parser, run_fsck

    args = build_parser().parse_args(argv)
    return run_fsck(args, *output_roots(load_config(args.config), args))


def audit_main(argv: list[str]) -> int:
    """`ciep audit sample|record`: a labelled audit of a run's generated R."""
    from pipeline.audit_cli import build_parser, run_audit

    args = build_parser().parse_args(argv)
    return run_audit(args, output_roots(load_config(args.config), args)[0])


# subcommand -> (entry point, help)
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "query": (query_main, "DuckDB SQL or a named query over a run's manifests"),
    "calibrate-identity": (calibrate_main, "identity-score distributions and threshold at a false-accept rate"),
    "release": (release_main, "create / verify / diff / list dataset releases"),
    "export": (export_main, "export a release for trainers (hf-parquet, webdataset, imagefolder)"),
    "report": (report_main, "self-contained HTML QC report of a run or release"),
    "qc": (qc_main, "qc redecide: re-decide a run from stored scores (new decision version)"),
    "fsck": (fsck_main, "check a run's or release's files against their checksums; --repair a run"),
    "audit": (audit_main, "a blind sample of a run's R to label by eye, and what the labels say of QC"),
}


def _run_command(module_name: str) -> Callable[[list[str]], int]:
    def call(argv: list[str]) -> int:
        return int(importlib.import_module(module_name).main(argv) or 0)
    return call


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {**{k: (_run_command(m), h) for k, (m, h) in RUN_COMMANDS.items()}, **COMMANDS}
    order = ["run", "train", "calibrate-identity", "qc", "audit", "release", "export", "report", "query", "fsck"]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: ciep <command> [options]\n\ncommands:")
        for name in order:
            print(f"  {name:<20} {commands[name][1]}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_credential_loggers()
    name, rest = argv[0], argv[1:]
    try:
        return commands[name][0](rest)
    except ConfigError as err:
        print(f"ciep {name}: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:  # no such run or release (same status for both)
        print(f"ciep {name}: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except Exception as err:  # noqa: BLE001 - one line and an exit status (pipeline/exits.py)
        return report(f"ciep {name}", err)


if __name__ == "__main__":
    sys.exit(main())
