"""Summary statistics and lineage of a release, computed with DuckDB over its committed manifest."""

from __future__ import annotations

import json

import duckdb

from manifests.query import connect, fetch_one
from manifests.schemas import TRIPLE_SCORES
from manifests.store import ManifestStore

SCORES = TRIPLE_SCORES

_IMAGES_SQL = """
    select distinct f, b from (
        select s_file as f, s_bytes as b from triples union all
        select r_file, r_bytes from triples union all
        select t_file, t_bytes from triples)"""


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=False)) for r in cur.fetchall()]


def _num(v: float | int | None, digits: int = 4) -> float | int | None:
    if v is None or isinstance(v, int):
        return v
    return round(float(v), digits)


def release_stats(store: ManifestStore, split_names: list[str]) -> dict:
    """Counts per split and round, identities, images and bytes, score distributions: all from the manifest."""
    con = connect(store)
    total = fetch_one(con, "select count(*) from triples")[0]
    images, image_bytes = fetch_one(con, f"select count(*), coalesce(sum(b), 0) from ({_IMAGES_SQL})")
    splits = {}
    for name in split_names:
        n, = fetch_one(con, "select count(*) from triples where split = ?", [name])
        idents = [r[0] for r in con.execute(
            "select distinct i from (select identity_i as i from triples where split = ? union "
            "select identity_j from triples where split = ?) order by 1", [name, name]).fetchall()]
        n_img, n_bytes = fetch_one(con,
            "select count(*), coalesce(sum(b), 0) from (select distinct f, b from ("
            "select s_file as f, s_bytes as b from triples where split = $1 union all "
            "select r_file, r_bytes from triples where split = $1 union all "
            "select t_file, t_bytes from triples where split = $1))", [name])
        splits[name] = dict(triples=n, identities=len(idents), identity_names=idents, images=n_img,
                            bytes=int(n_bytes))
    rounds = {str(r["round"]): r["n"] for r in _rows(
        con, "select round, count(*) as n from triples group by 1 order by 1")}
    expressions = {str(r["e"]): r["n"] for r in _rows(
        con, "select coalesce(expression, 'unlabelled') as e, count(*) as n from triples "
             "group by 1 order by 2 desc, 1")}
    scores = {}
    for s in SCORES:
        row = fetch_one(con, f"select min({s}), quantile_cont({s}, 0.1), median({s}), avg({s}), "
                          f"quantile_cont({s}, 0.9), max({s}) from triples")
        scores[s] = dict(zip(("min", "p10", "median", "mean", "p90", "max"), [_num(v) for v in row], strict=False))
    identities = fetch_one(con, "select count(distinct i) from (select identity_i as i from triples union "
                             "select identity_j from triples)")[0]
    return dict(triples=total, identities=identities, images=images, image_bytes=int(image_bytes),
                splits=splits, rounds=rounds, expressions=expressions, scores=scores)


def release_lineage(store: ManifestStore) -> dict:
    """Models, adapters, thresholds, runs and config fingerprints the release's triples came from."""
    con = connect(store)
    models = {}
    for role in ("expression", "swap", "identity"):
        models[role] = _rows(con, f"select distinct {role}_model as id, {role}_model_sha256 as sha256 "
                                  f"from triples order by 1, 2")
    thresholds = [json.loads(r[0]) for r in con.execute(
        "select distinct thresholds from triples where thresholds is not null order by 1").fetchall()]
    runs = _rows(con, "select run_id, config_fingerprint, list(distinct round order by round) as rounds, "
                      "count(*) as triples from triples group by 1, 2 order by 1, 2")
    adapters = _rows(con, "select round, kind, adapter_id, adapter_sha256, data_round, triples from lineage "
                          "order by round, kind, adapter_id")
    return dict(models=models, thresholds=thresholds, runs=runs, adapters=adapters)


def run_qc_summary(store: ManifestStore, rounds: list[int] | None) -> list[dict]:
    """Per round of the source run: candidates decided, accepted, pass rate and rejection reasons."""
    con = connect(store)
    where = f"where round in ({', '.join(str(int(r)) for r in rounds)})" if rounds else ""
    out = []
    for r in _rows(con, f"select round, count(*) as candidates, count(*) filter (where accepted) as accepted "
                        f"from qc {where} group by 1 order by 1"):
        reasons = {x["reason"]: x["n"] for x in _rows(
            con, "select reason, count(*) as n from qc where round = ? group by 1 order by 2 desc, 1", [r["round"]])}
        out.append(dict(round=r["round"], candidates=r["candidates"], accepted=r["accepted"],
                        pass_rate=_num(r["accepted"] / r["candidates"] if r["candidates"] else 0.0),
                        reasons=reasons))
    return out
