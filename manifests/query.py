"""DuckDB over a run's committed manifest shards, plus the named QC queries users run most."""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from manifests.schemas import TABLES
from manifests.store import ManifestStore, full_url

NAMED_QUERIES: dict[str, str] = {
    "pass-rate": """
        select round, count(*) as candidates, count(*) filter (where accepted) as accepted,
               round(avg(accepted::int), 4) as pass_rate
        from qc group by round order by round""",
    "reasons": """
        select round, reason, count(*) as n, round(count(*) / sum(count(*)) over (partition by round), 4) as share
        from qc group by round, reason order by round, n desc, reason""",
    "failed-checks": """
        select round, r.reason, count(*) as n
        from qc, unnest(reasons) as r(reason) group by round, r.reason order by round, n desc""",
    "score-histograms": """
        with s as (
          select 'id_sim_rt' as score, id_sim_rt as v from qc where id_sim_rt is not null
          union all select 'id_sim_rj', id_sim_rj from qc where id_sim_rj is not null
          union all select 'expr_dist_rt', expr_dist_rt from qc where expr_dist_rt is not null
          union all select 'sharpness', sharpness from qc where sharpness is not null)
        select score, floor(v * 20) / 20 as bin, count(*) as n from s group by score, bin order by score, bin""",
    "median-scores": """
        select accepted, count(*) as n, median(id_sim_rt) as id_sim_rt, median(id_sim_rj) as id_sim_rj,
               median(expr_dist_rt) as expr_dist_rt, median(sharpness) as sharpness
        from qc where face_found group by accepted order by accepted desc""",
    "per-identity": """
        select c.identity_i as identity, count(*) as candidates, count(*) filter (where q.accepted) as accepted
        from candidates c join qc q using (candidate_id) group by 1 order by 1""",
    "qc-selftest": """
        select label as expression, any_value(judged) as judged,
               max(value) filter (where measure = 'right_pass') as right_pass,
               max(ci_low) filter (where measure = 'right_pass') as right_lo,
               max(ci_high) filter (where measure = 'right_pass') as right_hi,
               max(value) filter (where measure = 'wrong_pass') as wrong_pass,
               max(ci_high) filter (where measure = 'wrong_pass') as wrong_hi,
               max(value) filter (where measure = 'auc') as auc,
               max(n) filter (where measure = 'right_pass') as n_right,
               max(n) filter (where measure = 'wrong_pass') as n_wrong, any_value(note) as note
        from qc_selftest where "check" = 'expression' group by label order by label""",
    "qc-selftest-checks": """
        select "check", label, measure, round(value, 4) as value, round(ci_low, 4) as ci_low,
               round(ci_high, 4) as ci_high, n, note
        from qc_selftest where "check" <> 'expression' order by "check", label, measure""",
    "rejects": """
        select stage, reason, count(*) as n from rejects group by 1, 2 order by n desc, stage, reason""",
    "audit": """
        select a.stratum, q.reason, count(*) as sampled, count(*) filter (where a.label = 'artificial') as artificial,
               count(*) filter (where a.label = 'fine') as fine, count(*) filter (where a.label = 'skip') as skipped
        from audit a left join qc_all q on q.candidate_id = a.candidate_id
                                       and coalesce(q.decision_version, 0) = a.decision_version
        group by 1, 2 order by 1, sampled desc, 2""",
}


def _file_list_sql(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple[Any, ...]:
    """The one row an aggregate query returns."""
    row = con.execute(sql, params or []).fetchone()
    if row is None:
        raise RuntimeError(f"query returned no row: {sql}")
    return row


def connect(stores: dict[str, ManifestStore] | ManifestStore) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per manifest table over the committed shards only.

    With several stores (e.g. releases), each view is the union of theirs plus a `source` column."""
    if isinstance(stores, ManifestStore):
        stores = {"": stores}
    # Object stores are read through the stores' own fsspec filesystems (registered below, with their
    # credentials); DuckDB never downloads an extension (httpfs or any other) for it.
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    registered = set()
    for store in stores.values():
        if not isinstance(store.fs, LocalFileSystem) and id(store.fs) not in registered:
            con.register_filesystem(store.fs)
            registered.add(id(store.fs))
    committed = {label: store.committed_files_by_table() for label, store in stores.items()}
    for table, schema in TABLES.items():
        parts = []
        for label, store in stores.items():
            files = [full_url(store.fs, f) for f in committed[label].get(table, [])]
            if files:
                src = f", '{label}' as source" if label else ""
                parts.append(f"select *{src} from read_parquet({_file_list_sql(files)}, union_by_name=true)")
        view = f"{table}_all" if table in VERSIONED else table
        if parts:
            con.execute(f"create view {view} as " + " union all by name ".join(parts))
        else:
            cols = ", ".join(f"cast(null as {_duck_type(f.type)}) as {f.name}" for f in schema)
            con.execute(f"create view {view} as select {cols} where false")
    _latest_decision_views(con, any(committed[label].get("qc") for label in stores))
    return con


# Tables with a decision_version (qc/redecide.py): `<table>_all` holds every version, `<table>` the latest.
VERSIONED = ("qc", "triples")


def _latest_decision_views(con: duckdb.DuckDBPyConnection, has_qc: bool) -> None:
    """Without qc rows (a release) every triple is current."""
    has = {t: has_qc and "decision_version" in [r[0] for r in con.execute(f"describe {t}_all").fetchall()]
           for t in VERSIONED}
    latest = "(select coalesce(max(decision_version), 0) from qc_all)" if has["qc"] else "0"
    for t in VERSIONED:
        where = f" where coalesce(decision_version, 0) = {latest}" if has[t] else ""
        con.execute(f"create view {t} as select * from {t}_all{where}")


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return _duck_type(t.value_type) + "[]"
    return {pa.string(): "varchar", pa.int32(): "integer", pa.int64(): "bigint", pa.float32(): "float",
            pa.float64(): "double", pa.bool_(): "boolean"}.get(t, "varchar")


def run_query(con: duckdb.DuckDBPyConnection, sql_or_name: str):
    """Run a named query or raw SQL; returns a DuckDB relation result as (columns, rows)."""
    sql = NAMED_QUERIES.get(sql_or_name, sql_or_name)
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description] if cur.description else []
    return cols, cur.fetchall()


_ESCAPES = {c: f"\\x{c:02x}" for c in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t", 127: "\\x7f"}


def format_table(cols: list[str], rows: list[tuple]) -> str:
    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        # one row per line whatever a file name holds: control characters shown escaped
        return "NULL" if v is None else str(v).translate(_ESCAPES)
    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=False))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) for r in cells]
    return "\n".join(out)
