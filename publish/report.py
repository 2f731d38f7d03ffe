"""`ciep report <run-or-release>`: a self-contained HTML QC report (plots and images embedded, no network).

Sections: pass rate and rejection reasons per round (QC decisions and the run's `rejects` table);
histograms of identity leak, swap success, expression distance and sharpness with the thresholds drawn;
contact sheets (S | R | T with scores) of accepted and rejected triples, worst first; round-over-round
comparison. A release holds accepted triples only, so its report has no rejected sheet (the page says so).
"""

from __future__ import annotations

import argparse
import html
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.location import Location
from manifests.query import connect
from manifests.runs import find_run, now_iso, read_run_info
from manifests.store import ManifestStore, atomic_write_bytes
from publish import plots
from publish.contact_sheet import SheetItem, sheet_html, worst_first
from publish.release.read import Release, ReleaseNotFoundError, open_release, open_release_url

log = logging.getLogger(__name__)

SCORES = [  # column, title, threshold key, rule shown, log x
    ("id_sim_rt", "identity leak: sim(R, T)", "max_leak_similarity", "max", False),
    ("id_sim_rj", "swap success: sim(R, j)", "min_swap_similarity", "min", False),
    ("expr_dist_rt", "expression distance(R, T)", "max_expression_distance", "max", False),
    ("sharpness", "sharpness of R", "min_sharpness", "min", False),
]

_RUN_SQL = """
    select q.candidate_id as item_id, q.round, q.accepted, q.reason, q.reasons, q.face_found, q.id_sim_rt,
           q.id_sim_rj, q.expr_dist_rt, q.sharpness, q.thresholds, c.identity_i, c.identity_j, c.expression,
           c.reference_path as r, s.aligned_path as s, t.aligned_path as t
    from qc q
    left join candidates c on c.candidate_id = q.candidate_id and c.round = q.round
    left join sources s on s.source_id = c.s_source_id
    left join sources t on t.source_id = c.target_source_id
    order by q.round, q.candidate_id"""

_RELEASE_SQL = """
    select triple_id as item_id, round, true as accepted, 'accepted' as reason, []::varchar[] as reasons,
           true as face_found, id_sim_rt, id_sim_rj, expr_dist_rt, sharpness, thresholds, identity_i, identity_j,
           expression, r_file as r, s_file as s, t_file as t, split
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
    keys = set(SheetItem.__dataclass_fields__)
    return [SheetItem(**{k: v for k, v in r.items() if k in keys}) for r in rows]


def _dicts(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=False)) for r in cur.fetchall()]


def _file_reader(where: Location) -> Callable[[str], bytes | None]:
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
    items = _items(_dicts(con.execute(_RUN_SQL)))
    rejects = _dicts(con.execute("select round, stage, reason, count(*) as n from rejects group by all "
                                 "order by round, n desc, stage, reason"))
    return ReportData("run", info.get("run_id", run.url.rsplit("/", 1)[-1]), run.url, info, items,
                      _file_reader(run), rejects)


def load_release(release: Release) -> ReportData:
    con = connect(release.store)
    rows = _dicts(con.execute(_RELEASE_SQL))
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
        for col, *_ in SCORES:
            vals = [getattr(it, col) for it in acc if getattr(it, col) is not None]
            med[col] = float(np.median(vals)) if vals else None
        out.append(dict(round=r, candidates=len(rs), accepted=len(acc),
                        pass_rate=len(acc) / len(rs) if rs else 0.0, reasons=Counter(it.reason for it in rs),
                        medians=med))
    return out


# -- HTML ------------------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#1f1f1f;background:#fff;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.meta{color:#555}.note{background:#fff8e1;border-left:4px solid #f9a825;padding:8px 12px}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots img{max-width:100%}
.sheet{display:grid;grid-template-columns:repeat(var(--cols),1fr);gap:10px}
figure.triple{margin:0;padding:6px;border:1px solid #ddd;border-radius:4px;font-size:12px}
figure.ok{border-top:4px solid #2e7d32}figure.bad{border-top:4px solid #c62828}
figure img{display:block;max-width:100%;height:auto}figcaption span{margin-right:6px}
.fail{color:#c62828;font-weight:600}.verdict{font-weight:600}.empty{color:#777}
"""

# Counts images that failed to decode after load; tests read the attributes from Chromium's --dump-dom.
_SELF_CHECK = """
window.addEventListener("load", function () {
  var bad = 0, imgs = document.images;
  for (var i = 0; i < imgs.length; i++) { if (!imgs[i].complete || imgs[i].naturalWidth === 0) bad++; }
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-broken-images", String(bad));
});
"""


def _table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return "–" if v is None else html.escape(str(v))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _pass_rate_section(data: ReportData, rounds: list[dict]) -> str:
    reasons = sorted({k for r in rounds for k in r["reasons"]}, key=lambda k: (k != "accepted", k))
    counts: dict[str, Sequence[int]] = {k: [r["reasons"].get(k, 0) for r in rounds] for k in reasons}
    parts = ["<h2>Pass rate and rejection reasons per round</h2>"]
    if rounds:
        parts.append(_img(plots.reasons_by_round([r["round"] for r in rounds], counts,
                                                 [r["pass_rate"] for r in rounds]), "QC outcome per round"))
    parts.append(_table(["round", "candidates", "accepted", "pass rate"] + [k for k in reasons if k != "accepted"],
                        [[r["round"], r["candidates"], r["accepted"], f"{r['pass_rate']:.1%}"]
                         + [r["reasons"].get(k, 0) for k in reasons if k != "accepted"] for r in rounds]))
    if data.kind == "run":
        parts.append("<h3>Rejects table (ingest, pairing, stage failures)</h3>")
        if data.rejects:
            totals: Counter[str] = Counter()
            for r in data.rejects:
                totals[f"{r['stage']}: {r['reason']}"] += r["n"]
            labels, values = zip(*totals.most_common(), strict=False)
            parts.append(_img(plots.horizontal_counts("rejects by stage and reason", labels, values),
                              "rejects by stage and reason"))
            parts.append(_table(["round", "stage", "reason", "items"],
                                [[r["round"], r["stage"], r["reason"], r["n"]] for r in data.rejects]))
        else:
            parts.append('<p class="empty">The run rejected no item outside QC.</p>')
    return "\n".join(parts)


def _histogram_section(data: ReportData, thresholds: dict) -> str:
    parts = ["<h2>Score distributions</h2>", '<div class="plots">']
    for col, title, key, rule, log_x in SCORES:
        acc = np.array([getattr(it, col) for it in data.items if it.accepted and getattr(it, col) is not None],
                       dtype=float)
        rej = None
        if data.kind == "run":
            rej = np.array([getattr(it, col) for it in data.items
                            if not it.accepted and getattr(it, col) is not None], dtype=float)
        if not len(acc) and (rej is None or not len(rej)):
            continue
        parts.append(_img(plots.score_histogram(title, acc, rej, thresholds.get(key), rule, log_x), title))
    parts.append("</div>")
    return "\n".join(parts)


def _trend_section(rounds: list[dict]) -> str:
    parts = ["<h2>Round over round</h2>"]
    rows = []
    prev = None
    for r in rounds:
        delta: float | None = None if prev is None else r["pass_rate"] - prev["pass_rate"]
        rows.append([r["round"], r["candidates"], r["accepted"], f"{r['pass_rate']:.1%}",
                     "–" if delta is None else f"{delta:+.1%}"] + [r["medians"][c] for c, *_ in SCORES])
        prev = r
    parts.append(_table(["round", "candidates", "accepted", "pass rate", "Δ pass rate"]
                        + [f"median {c} (accepted)" for c, *_ in SCORES], rows))
    if len(rounds) > 1:
        series: dict[str, Sequence[float | None]] = {"pass rate": [r["pass_rate"] for r in rounds]}
        series |= {f"median {c}": [r["medians"][c] for r in rounds] for c, *_ in SCORES}
        parts.append(_img(plots.round_trends([r["round"] for r in rounds], series), "round-over-round trends"))
    else:
        parts.append('<p class="empty">One round only: nothing to compare yet.</p>')
    return "\n".join(parts)


def _sheets_section(data: ReportData, thresholds: dict, max_items: int) -> str:
    acc = worst_first([it for it in data.items if it.accepted], thresholds)
    rej = worst_first([it for it in data.items if not it.accepted], thresholds)
    parts = ["<h2>Contact sheets</h2>",
             "<p class=\"meta\">Each strip is S | R | T. Worst first: rejected by number of failed checks, then "
             "by how far the worst score is past its threshold; accepted by how close the nearest score is to "
             "its threshold (identity margins per 0.1 cosine, expression and sharpness relative to their "
             f"thresholds). At most {max_items} per sheet.</p>",
             f"<h3>Accepted ({len(acc)})</h3>", sheet_html(acc[:max_items], data.read)]
    if data.kind == "run":
        parts += [f"<h3>Rejected ({len(rej)})</h3>", sheet_html(rej[:max_items], data.read)]
    else:
        parts += ["<h3>Rejected</h3>", '<p class="note">A release holds accepted triples only: rejected candidates '
                  f"and their reasons are in the source run (<code>ciep report "
                  f"{html.escape(str(data.info.get('source', {}).get('run_id', '<run-id>')))}</code>).</p>"]
    return "\n".join(parts)


def render_report(data: ReportData, max_items: int = 36) -> str:
    """The whole page as one HTML string."""
    thresholds, n_sets = main_thresholds(data.items)
    rounds = per_round(data.items)
    title = f"CIEP QC report: {data.kind} {data.name}"
    meta = [f"{data.kind} <b>{html.escape(data.name)}</b> at <code>{html.escape(data.url)}</code>",
            f"generated {now_iso()}", f"{len(data.items)} {'triples' if data.kind == 'release' else 'QC decisions'}, "
            f"{sum(it.accepted for it in data.items)} accepted"]
    head = [f"<h1>{html.escape(title)}</h1>", f'<p class="meta">{" · ".join(meta)}</p>']
    if data.kind == "release":
        src = data.info.get("source", {})
        head.append(
            '<p class="note">This is a release: it holds <b>accepted triples only</b>, so pass rates are 100% '
            "by construction, the histograms show accepted scores only and there is no rejected sheet. "
            f"Source run <code>{html.escape(str(src.get('run_id')))}</code>, rounds {src.get('rounds')}; splits: "
            + ", ".join(f"{html.escape(k)} {v}" for k, v in sorted(data.splits.items())) + ".</p>")
    if thresholds:
        head.append("<p>Thresholds: " + ", ".join(f"<code>{html.escape(k)}</code> {v}" for k, v in
                                                  sorted(thresholds.items())) + "</p>")
    if n_sets > 1:
        head.append(f'<p class="note">Rows carry {n_sets} different threshold sets; lines show the most used.</p>')
    body = "\n".join(head + [_pass_rate_section(data, rounds), _histogram_section(data, thresholds),
                             _sheets_section(data, thresholds, max_items), _trend_section(rounds)])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style>'
            f"<script>{_SELF_CHECK}</script></head>\n<body>\n{body}\n</body></html>\n")


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
