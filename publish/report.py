"""`ciep report <run-or-release>`: a self-contained HTML QC report (plots and images embedded, no network).

Sections: the checks that decide (qc/decide.py DECIDING_CHECKS) with the thresholds this run applied ("off" where
one is not calibrated); the run's self-test (run.json `selftest`); pass rate and rejection reasons per round (QC
decisions and the run's `rejects` table); a histogram of every deciding score with its threshold drawn; contact
sheets (S | R | T with scores) of accepted and rejected triples, worst first; round-over-round comparison. A release
holds accepted triples only, so its report has no rejected sheet (the page says so).

Rendered by a Jinja2 template with autoescape (publish/templates/report.html.j2): every name from the corpus, an
index or a config is shown as text; the page's Content-Security-Policy allows only its own inline style and script.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from markupsafe import Markup

from core.location import Location
from manifests.query import connect
from manifests.runs import find_run, now_iso, read_run_info
from manifests.store import ManifestStore, atomic_write_bytes
from publish import plots
from publish.audit_view import COLUMNS as AUDIT_COLUMNS
from publish.audit_view import audit_table
from publish.contact_sheet import SheetItem, item_from_row, sheet_html, worst_first
from publish.decision_view import OFF, CheckView, check_views, failed
from publish.release.read import Release, ReleaseNotFoundError, open_release, open_release_url
from publish.selftest_view import selftest_view
from publish.templates import content_security_policy, html_env
from qc.decide import DECIDING_CHECKS

log = logging.getLogger(__name__)

SCORE_COLUMNS = tuple(dict.fromkeys(c.score for c in DECIDING_CHECKS))  # every deciding score, in check order


def _score_select(con, table: str, prefix: str) -> str:
    """The deciding score columns of a view, null for those an older run or release lacks."""
    have = {r[0] for r in con.execute(f"describe {table}").fetchall()}
    return ", ".join(f"{prefix}{c}" if c in have else f"null as {c}" for c in SCORE_COLUMNS)


_RUN_SQL = """
    select q.candidate_id as item_id, q.round, q.accepted, q.reason, q.reasons, q.face_found, q.thresholds,
           c.identity_i, c.identity_j, c.expression, c.reference_path as r, s.aligned_path as s,
           t.aligned_path as t, t.input_key as t_name, {scores}
    from qc q
    left join candidates c on c.candidate_id = q.candidate_id and c.round = q.round
    left join sources s on s.source_id = c.s_source_id
    left join sources t on t.source_id = c.target_source_id
    order by q.round, q.candidate_id"""

_RELEASE_SQL = """
    select triple_id as item_id, round, true as accepted, 'accepted' as reason, []::varchar[] as reasons,
           true as face_found, thresholds, identity_i, identity_j, expression, r_file as r, s_file as s,
           t_file as t, split, {scores}
    from triples order by round, triple_id"""


@dataclass
class ReportData:
    kind: str  # "run" | "release"
    name: str
    url: str
    info: dict
    items: list[SheetItem]
    read: Callable[[str], bytes | None]
    rejects: list[dict] = field(default_factory=list)  # round, stage, reason, n (runs only)
    splits: dict[str, int] = field(default_factory=dict)  # releases only


def _items(rows: list[dict]) -> list[SheetItem]:
    return [item_from_row(r) for r in rows]


def _dicts(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=False)) for r in cur.fetchall()]


def file_reader(where: Location) -> Callable[[str], bytes | None]:
    """Bytes of an image URL read through `where`'s filesystem; None when it cannot be read."""
    def read(url: str) -> bytes | None:
        try:
            with where.open_url(url) as fh:
                return fh.read()
        except (FileNotFoundError, OSError):
            return None
    return read


def load_run(url: Location | str) -> ReportData:
    run = Location.of(url)
    info = read_run_info(run)
    con = connect(ManifestStore.open(run))
    items = _items(_dicts(con.execute(_RUN_SQL.format(scores=_score_select(con, "qc", "q.")))))
    rejects = _dicts(con.execute("select round, stage, reason, count(*) as n from rejects group by all "
                                 "order by round, n desc, stage, reason"))
    return ReportData("run", info.get("run_id", run.url.rsplit("/", 1)[-1]), run.url, info, items,
                      file_reader(run), rejects)


def load_release(release: Release) -> ReportData:
    con = connect(release.store)
    rows = _dicts(con.execute(_RELEASE_SQL.format(scores=_score_select(con, "triples", ""))))
    splits = dict(Counter(r["split"] for r in rows))

    def read(rel: str) -> bytes | None:
        try:
            return release.read_bytes(rel)
        except FileNotFoundError:
            return None
    return ReportData("release", release.name, release.root, release.info, _items(rows), read, splits=splits)


# -- aggregation -----------------------------------------------------------------------------------------
def main_thresholds(items: list[SheetItem]) -> tuple[dict, int]:
    """The most used thresholds (JSON) and how many distinct sets the rows carry."""
    c = Counter(it.thresholds for it in items if it.thresholds)
    if not c:
        return {}, 0
    return json.loads(c.most_common(1)[0][0]), len(c)


def per_round(items: list[SheetItem]) -> list[dict]:
    rounds = sorted({it.round for it in items})
    out = []
    for r in rounds:
        rs = [it for it in items if it.round == r]
        acc = [it for it in rs if it.accepted]
        med = {}
        for col in SCORE_COLUMNS:
            vals = [float(v) for it in acc if (v := it.scores.get(col)) is not None]
            med[col] = float(np.median(vals)) if vals else None
        out.append(dict(round=r, candidates=len(rs), accepted=len(acc),
                        pass_rate=len(acc) / len(rs) if rs else 0.0, reasons=Counter(it.reason for it in rs),
                        medians=med))
    return out


def check_rows(data: ReportData, views: list[CheckView]) -> list[dict]:
    """The checks table: each deciding check, its rule and threshold, how many rows it scored and failed."""
    out = []
    for v in views:
        scored = [it for it in data.items if it.scores.get(v.check.score) is not None]
        fails = sum(failed(v.check, it.scores[v.check.score], it.threshold_dict({}), it.expression) for it in scored)
        out.append(dict(title=v.check.title, score=v.check.score, reason=v.check.reason, threshold=v.threshold_text,
                        off=v.off, scored=len(scored), failed=fails))
    return out


# -- HTML ------------------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#1f1f1f;background:#fff;padding:0 16px;overflow-wrap:anywhere}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.scroll{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}td.text{text-align:left}
code{overflow-wrap:anywhere;word-break:break-all}img{max-width:100%;height:auto}
.meta{color:#555}.note{background:#fff8e1;border-left:4px solid #f9a825;padding:8px 12px}
.off{color:#8a5a00;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0;max-width:100%}.plots img{max-width:100%}
.plots figcaption{font-size:12px;color:#555;max-width:420px}
.sheet{display:grid;gap:10px}.cols-1{grid-template-columns:1fr}.cols-2{grid-template-columns:repeat(2,minmax(0,1fr))}
.cols-3{grid-template-columns:repeat(3,minmax(0,1fr))}
figure.triple{margin:0;padding:6px;border:1px solid #ddd;border-radius:4px;font-size:12px;min-width:0}
figure.ok{border-top:4px solid #2e7d32}figure.bad{border-top:4px solid #c62828}
figure img{display:block;max-width:100%;height:auto}figcaption span.score{margin-right:6px;white-space:nowrap}
.fail{color:#c62828;font-weight:600}.verdict{font-weight:600}.empty{color:#777}
@media (max-width:900px){.cols-3,.cols-2{grid-template-columns:minmax(0,1fr)}}
"""

# Counts images that failed to decode after load and whether the page is wider than the window; tests read the
# attributes from Chromium's --dump-dom. The only script the page's Content-Security-Policy allows.
_SELF_CHECK = """
window.addEventListener("load", function () {
  var bad = 0, imgs = document.images;
  for (var i = 0; i < imgs.length; i++) { if (!imgs[i].complete || imgs[i].naturalWidth === 0) bad++; }
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-broken-images", String(bad));
  document.body.setAttribute("data-scroll-width", String(document.documentElement.scrollWidth));
  document.body.setAttribute("data-viewport-width", String(document.documentElement.clientWidth));
});
"""


def _reject_chart(data: ReportData) -> str | None:
    if not data.rejects:
        return None
    totals: Counter[str] = Counter()
    for r in data.rejects:
        totals[f"{r['stage']}: {r['reason']}"] += r["n"]
    labels, values = zip(*totals.most_common(), strict=False)
    return plots.horizontal_counts("rejects by stage and reason", labels, values)


def _histograms(data: ReportData, views: list[CheckView]) -> list[dict]:
    """One figure per scored deciding check, its threshold(s) drawn, or "off" written on it."""
    out = []
    for v in views:
        col = v.check.score
        acc = np.array([it.scores[col] for it in data.items if it.accepted and it.scores.get(col) is not None],
                       dtype=float)
        rej = None
        if data.kind == "run":
            rej = np.array([it.scores[col] for it in data.items if not it.accepted and it.scores.get(col) is not None],
                           dtype=float)
        if not len(acc) and (rej is None or not len(rej)):
            continue
        uri = plots.score_histogram(v.check.title, acc, rej, v.lines(), v.check.rule, off_note=OFF if v.off else None)
        out.append(dict(uri=Markup(uri), title=v.check.title, score=col, threshold=v.threshold_text, off=v.off))
    return out


def _trend(rounds: list[dict]) -> dict:
    rows = []
    prev = None
    for r in rounds:
        rows.append(dict(r, delta=None if prev is None else r["pass_rate"] - prev["pass_rate"]))
        prev = r
    chart = None
    if len(rounds) > 1:
        series: dict[str, Sequence[float | None]] = {"pass rate": [r["pass_rate"] for r in rounds]}
        series |= {f"median {c}": [r["medians"][c] for r in rounds] for c in SCORE_COLUMNS
                   if any(r["medians"][c] is not None for r in rounds)}
        chart = Markup(plots.round_trends([r["round"] for r in rounds], series))
    return dict(rows=rows, chart=chart)


def render_report(data: ReportData, max_items: int = 36) -> str:
    """The whole page as one HTML string."""
    thresholds, n_sets = main_thresholds(data.items)
    views = check_views(thresholds)
    rounds = per_round(data.items)
    reasons = sorted({k for r in rounds for k in r["reasons"]}, key=lambda k: (k != "accepted", k))
    acc = worst_first([it for it in data.items if it.accepted], thresholds)
    rej = worst_first([it for it in data.items if not it.accepted], thresholds)
    outcome = None
    if rounds:
        outcome = Markup(plots.reasons_by_round([r["round"] for r in rounds],
                                                {k: [r["reasons"].get(k, 0) for r in rounds] for k in reasons},
                                                [r["pass_rate"] for r in rounds]))
    reject_chart = _reject_chart(data) if data.kind == "run" else None
    page = html_env().get_template("report.html.j2").render(
        title=f"CIEP QC report: {data.kind} {data.name}", data=data, generated=now_iso(),
        n_accepted=sum(it.accepted for it in data.items), source=data.info.get("source", {}),
        thresholds=thresholds, n_sets=n_sets, checks=check_rows(data, views), rounds=rounds, reasons=reasons,
        outcome=outcome, reject_chart=Markup(reject_chart) if reject_chart else None,
        histograms=_histograms(data, views), score_columns=SCORE_COLUMNS, trend=_trend(rounds),
        selftest=selftest_view(data.info.get("selftest")), audit=audit_table(data.info.get("audit")),
        audit_columns=AUDIT_COLUMNS, max_items=max_items, n_acc=len(acc), n_rej=len(rej),
        accepted_sheet=sheet_html(acc[:max_items], data.read, thresholds),
        rejected_sheet=sheet_html(rej[:max_items], data.read, thresholds) if data.kind == "run" else None,
        css=Markup(_CSS), script=Markup(_SELF_CHECK), csp=content_security_policy([_CSS], [_SELF_CHECK]))
    return page


# -- CLI -------------------------------------------------------------------------------------------------
def load_target(target: str, output_root: Location | str, releases_root: Location | str,
                kind: str | None) -> ReportData:
    """A run id or release name (under the roots), or a run/release folder reached with the output root's options."""
    outputs = Location.of(output_root)
    releases = Location.of(releases_root)
    if "/" in target or "://" in target:
        where = outputs.at(target)
        if kind != "run" and where.exists("release.json"):
            return load_release(open_release_url(where))
        if read_run_info(where):
            return load_run(where)
        raise FileNotFoundError(f"{target!r} holds neither run.json nor release.json")
    if kind != "run":
        try:
            return load_release(open_release(releases, target))
        except ReleaseNotFoundError:
            if kind == "release":
                raise
    return load_run(find_run(outputs, target))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ciep report", description=__doc__.splitlines()[0])
    p.add_argument("target", nargs="?", help="run id, release name, or a run/release folder (default: latest run)")
    p.add_argument("--kind", choices=["run", "release"], help="when a run and a release share the name")
    p.add_argument("--out", help="HTML file to write (default <output-root>/reports/<name>.html)")
    p.add_argument("--max-items", type=int, default=36, help="triples per contact sheet (default 36)")
    p.add_argument("--config", help="config whose run.output_root is used (default configs/demo.yaml)")
    p.add_argument("--output-root", help="folder or URL holding runs (overrides the config)")
    p.add_argument("--releases-root", help="folder or URL holding releases (default <output-root>/releases)")
    return p


def run_cli(args: argparse.Namespace, output_root: Location, releases_root: Location) -> int:
    """Run a parsed `ciep report` (wired in pipeline/cli.py) against these storage locations."""
    if args.target:
        data = load_target(args.target, output_root, releases_root, args.kind)
    else:
        data = load_run(find_run(output_root, None))
    page = render_report(data, args.max_items)
    out = output_root.at(args.out) if args.out else \
        output_root.join("reports", f"{data.name}.html")
    atomic_write_bytes(out.fs, out.path, page.encode())
    print(f"report of {data.kind} {data.name}: {len(data.items)} rows, {len(page) / 1e6:.1f} MB -> {out.url}")
    return 0
