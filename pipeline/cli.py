"""The `ciep` command: one subcommand per job, each implemented by a module's main(argv)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from manifests.query import NAMED_QUERIES, connect, format_table, run_query
from manifests.runs import resolve_run
from manifests.store import ManifestStore
from pipeline.config import ConfigError, load_config, quiet_credential_loggers
from pipeline.exits import EXIT_NOT_FOUND, UsageError, report

# subcommand -> (module, help). Each module exposes main(argv: list[str]) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pipeline.run_idi", "run IDI rounds (same as python pipeline/run_idi.py)"),
    "train": ("pipeline.train_adapter", "train an E-Adapter on a run's or release's triples"),
    "calibrate-identity": ("qc.calibrate", "identity-score distributions and threshold at a false-accept rate"),
    "release": ("manifests.release_cli", "create / verify / diff / list dataset releases"),
    "export": ("manifests.export", "export a release for trainers (hf-parquet, webdataset, imagefolder)"),
    "report": ("qc.report", "self-contained HTML QC report of a run or release"),
}


def _query(con, sql: str) -> tuple[list[str], list[tuple]]:
    """run_query with one-line usage errors: a mistyped named query, or SQL DuckDB cannot run."""
    import duckdb

    if sql not in NAMED_QUERIES and len(sql.split()) == 1:
        import difflib

        close = difflib.get_close_matches(sql, list(NAMED_QUERIES), n=1)
        raise UsageError(f"no named query {sql!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                         + f"; named queries: {', '.join(NAMED_QUERIES)}; or give SQL text")
    try:
        return run_query(con, sql)
    except duckdb.Error as err:
        raise UsageError(f"SQL error: {' '.join(str(err).split())}") from None


def query_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ciep query", description="DuckDB SQL over a run's manifests. "
                                "Tables: sources, rejects, candidates, qc, triples, lineage. "
                                f"Named queries: {', '.join(NAMED_QUERIES)}.")
    p.add_argument("sql", help="SQL text or the name of a named query")
    p.add_argument("--run", help="run id (default: the most recently updated run)")
    p.add_argument("--config", help="config whose run.output_root is searched (default configs/demo.yaml)")
    p.add_argument("--output-root", help="folder or URL holding runs (overrides the config)")
    p.add_argument("--release", action="append", default=[], help="query these releases instead of a run")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    root = args.output_root or cfg.run.output_root
    if args.release:
        from manifests.release import release_stores
        con = connect(release_stores(root, args.release))
    else:
        opts = dict(cfg.run.storage_options)
        con = connect(ManifestStore.open(resolve_run(root, args.run, opts), opts))
    cols, rows = _query(con, args.sql)
    if args.format == "table":
        print(format_table(cols, rows))
    elif args.format == "csv":
        import csv
        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    else:
        import json
        print(json.dumps([dict(zip(cols, r)) for r in rows], default=str, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"query": "DuckDB SQL or a named query over a run's manifests",
                **{k: v[1] for k, v in SUBCOMMANDS.items()}}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: ciep <command> [options]\n\ncommands:")
        for name, help_text in commands.items():
            print(f"  {name:<20} {help_text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_credential_loggers()
    name, rest = argv[0], argv[1:]
    try:
        if name == "query":
            return query_main(rest)
        module = importlib.import_module(SUBCOMMANDS[name][0])
        return int(module.main(rest) or 0)
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
