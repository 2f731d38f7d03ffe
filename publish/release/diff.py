"""Comparing two releases: triples added and removed, split moves, and how the QC scores shifted."""

from __future__ import annotations

from dataclasses import dataclass

from manifests.schemas import TRIPLE_SCORES
from publish.release.read import Release

DIFF_SCORES = TRIPLE_SCORES  # those both releases' manifests have (older formats lack some)


@dataclass
class ReleaseDiff:
    a: str
    b: str
    count_a: int
    count_b: int
    added: list[dict]  # triple_id, round, split, identity_i, identity_j
    removed: list[dict]
    common: int
    split_moves: list[dict]  # triple_id, split_a, split_b
    score_shifts: dict[str, dict]  # score -> changed, mean_delta, max_abs_delta (common triples)
    distributions: dict[str, dict]  # score -> mean_a, mean_b, median_a, median_b


def diff_releases(a: Release, b: Release, eps: float = 1e-6) -> ReleaseDiff:
    """Triples added and removed from a to b, split moves, and how the QC scores shifted."""
    from manifests.query import connect, fetch_one

    con = connect({"a": a.store, "b": b.store})
    con.execute("create temp table ta as select * from triples where source = 'a'")
    con.execute("create temp table tb as select * from triples where source = 'b'")

    def rows(sql: str) -> list[dict]:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=False)) for r in cur.fetchall()]

    side = "triple_id, round, split, identity_i, identity_j, expression"
    added = rows(f"select {side} from tb anti join ta using (triple_id) order by triple_id")
    removed = rows(f"select {side} from ta anti join tb using (triple_id) order by triple_id")
    common = fetch_one(con, "select count(*) from ta join tb using (triple_id)")[0]
    moves = rows("select triple_id, ta.split as split_a, tb.split as split_b from ta join tb using (triple_id) "
                 "where ta.split <> tb.split order by triple_id")
    shifts, dists = {}, {}
    cols = {r[0] for r in con.execute("describe triples").fetchall()}
    for s in [s for s in DIFF_SCORES if s in cols]:
        changed, mean_d, max_d = fetch_one(con,
            f"select count(*) filter (where abs(tb.{s} - ta.{s}) > {eps} or (ta.{s} is null) <> (tb.{s} is null)), "
            f"avg(tb.{s} - ta.{s}), max(abs(tb.{s} - ta.{s})) from ta join tb using (triple_id)")
        shifts[s] = dict(changed=changed, mean_delta=mean_d, max_abs_delta=max_d)
        ma, mda = fetch_one(con, f"select avg({s}), median({s}) from ta")
        mb, mdb = fetch_one(con, f"select avg({s}), median({s}) from tb")
        dists[s] = dict(mean_a=ma, mean_b=mb, median_a=mda, median_b=mdb)
    na = fetch_one(con, "select count(*) from ta")[0]
    nb = fetch_one(con, "select count(*) from tb")[0]
    return ReleaseDiff(a.name, b.name, na, nb, added, removed, common, moves, shifts, dists)
