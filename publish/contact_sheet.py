"""Contact sheets of the QC report: S | R | T strips with their scores, worst first, as embedded JPEGs."""

from __future__ import annotations

import base64
import io
import json
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from PIL import Image, ImageDraw

from publish.decision_view import RULE_SIGN, check_margin, failed, score_text
from publish.templates import html_env
from qc.decide import DECIDING_CHECKS, applied_threshold

TILE = 112


@dataclass
class SheetItem:
    """One triple (or candidate) on a sheet: image locators, scores, decision."""

    item_id: str
    round: int
    accepted: bool
    reason: str
    reasons: list[str]
    face_found: bool | None
    s: str | None  # locators the report's reader understands (URL or release-relative path)
    r: str | None
    t: str | None
    scores: dict[str, float | None] = field(default_factory=dict)  # every deciding score (DECIDING_CHECKS)
    identity_i: str | None = None
    identity_j: str | None = None
    expression: str | None = None
    thresholds: str | None = None
    caption: str | None = None  # a second caption line (the README's sheet)
    t_name: str | None = None  # T's file as listed in the corpus (runs)

    def threshold_dict(self, fallback: dict) -> dict:
        return json.loads(self.thresholds) if self.thresholds else fallback


def margin(item: SheetItem, thresholds: dict) -> float:
    """Smallest normalised distance to a threshold on the passing side over the deciding checks (negative: that
    check failed)."""
    if item.face_found is False:
        return -math.inf
    m = [x for c in DECIDING_CHECKS
         if (x := check_margin(c, item.scores.get(c.score), thresholds, item.expression)) is not None]
    if not m:  # failed before QC could score it (e.g. expression transfer error)
        return -math.inf
    return min(m)


def worst_first(items: list[SheetItem], thresholds: dict) -> list[SheetItem]:
    """Rejected: most failed checks, then the largest violation first. Accepted: closest to a threshold first."""
    def key(it: SheetItem) -> tuple:
        return (-len(it.reasons), margin(it, it.threshold_dict(thresholds)), it.item_id)
    return sorted(items, key=key)


def score_cells(item: SheetItem, thresholds: dict) -> list[dict]:
    """The caption's scores: each scored deciding check with its value, threshold and whether it failed."""
    th = item.threshold_dict(thresholds)
    out = []
    for c in DECIDING_CHECKS:
        value = item.scores.get(c.score)
        if value is None:
            continue
        limit = applied_threshold(c, th, {"expression": item.expression})
        out.append(dict(name=c.score, title=c.title, value=score_text(value),
                        threshold="off" if limit is None else f"{RULE_SIGN[c.rule]} {limit:g}",
                        failed=failed(c, value, th, item.expression)))
    return out


def _placeholder(label: str) -> Image.Image:
    im = Image.new("RGB", (TILE, TILE), (210, 210, 210))
    d = ImageDraw.Draw(im)
    d.line((0, 0, TILE, TILE), fill=(150, 150, 150), width=2)
    d.line((0, TILE, TILE, 0), fill=(150, 150, 150), width=2)
    d.text((6, TILE - 16), label, fill=(60, 60, 60))
    return im


def strip_jpeg(images: list[bytes | None], quality: int = 85) -> bytes:
    """S | R | T tiles side by side; a missing image becomes a grey crossed tile."""
    out = Image.new("RGB", (TILE * len(images) + 4 * (len(images) - 1), TILE), (255, 255, 255))
    for i, (data, label) in enumerate(zip(images, ("S missing", "R missing", "T missing"), strict=False)):
        tile = None
        if data:
            try:
                with Image.open(io.BytesIO(data)) as im:
                    tile = im.convert("RGB").resize((TILE, TILE), Image.Resampling.BILINEAR)
            except (OSError, ValueError):
                tile = None
        out.paste(tile or _placeholder(label), (i * (TILE + 4), 0))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def sheet_html(items: list[SheetItem], read: Callable[[str], bytes | None], thresholds: dict | None = None,
               columns: int = 3) -> Markup:
    """An HTML grid of S | R | T strips with ids, decision and every deciding score beside its threshold (failed
    checks highlighted); names are escaped by the template."""
    cells = []
    for it in items:
        imgs = [read(loc) if loc else None for loc in (it.s, it.r, it.t)]
        cells.append(dict(item=it, uri=Markup("data:image/jpeg;base64," + base64.b64encode(strip_jpeg(imgs)).decode()),
                          scores=score_cells(it, thresholds or {}),
                          verdict="accepted" if it.accepted else ", ".join(it.reasons) or it.reason))
    return Markup(html_env().get_template("sheet.html.j2").render(cells=cells, columns=columns, width=3 * TILE + 8,
                                                                  height=TILE))


# -- the README's contact sheet: one JPEG of captioned strips ---------------------------------------------------

def _ascii_signs(text: str) -> str:
    """<= and >= for the threshold signs: Pillow's default font has no glyph for them (it drew boxes)."""
    return text.replace("≤", "<=").replace("≥", ">=")


def caption_lines(it: SheetItem, thresholds: dict, width: int = 58) -> list[str]:
    """ids, decision, every deciding score with its threshold ("!" where it failed), the extra caption."""
    who = f"i {it.identity_i or '?'}, j {it.identity_j or '?'}, T labelled {it.expression or '-'}"
    verdict = "accepted" if it.accepted else "rejected: " + ", ".join(it.reasons or [it.reason])
    scores = " ".join(f"{c['name']} {c['value']}{'!' if c['failed'] else ''} ({_ascii_signs(c['threshold'])})"
                      for c in score_cells(it, thresholds)) or "no scores"
    lines = [who[:width], verdict if len(verdict) <= width else verdict[:width - 2] + ".."]
    return lines + textwrap.wrap(scores, width) + ([it.caption[:width]] if it.caption else [])


def sheet_jpeg(items: list[SheetItem], read: Callable[[str], bytes | None], columns: int = 2,
               quality: int = 88, thresholds: dict | None = None) -> bytes:
    """A JPEG grid of S | R | T strips, each captioned with ids, decision and the deciding scores."""
    strip_w, line_h, pad = 3 * TILE + 8, 13, 8
    captions = [caption_lines(it, thresholds or {}) for it in items]
    cap_h = line_h * max((len(c) for c in captions), default=1) + 4
    rows = max(1, math.ceil(len(items) / columns))
    out = Image.new("RGB", (columns * (strip_w + pad) + pad, rows * (TILE + cap_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for k, (it, lines) in enumerate(zip(items, captions, strict=True)):
        x, y = pad + (k % columns) * (strip_w + pad), pad + (k // columns) * (TILE + cap_h + pad)
        with Image.open(io.BytesIO(strip_jpeg([read(loc) if loc else None for loc in (it.s, it.r, it.t)]))) as im:
            out.paste(im.convert("RGB"), (x, y))
        for n, line in enumerate(lines):
            colour = ((0, 110, 0) if it.accepted else (170, 0, 0)) if n == 1 else (30, 30, 30)
            draw.text((x, y + TILE + 2 + n * line_h), line, fill=colour)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def run_sheet_items(run_url: str, accepted: int = 8, rejected: int = 4) -> list[SheetItem]:
    """Accepted and rejected candidates of a run's latest decision, spread over T's expressions, deterministic."""
    from manifests.query import connect
    from manifests.store import ManifestStore

    con = connect(ManifestStore.open(run_url))
    have = {r[0] for r in con.execute("describe qc").fetchall()}
    scores = ", ".join(f"q.{c}" if c in have else f"null as {c}" for c in dict.fromkeys(
        ch.score for ch in DECIDING_CHECKS))
    sql = f"""select q.candidate_id as item_id, q.round, q.accepted, q.reason, q.reasons, q.face_found,
                     s.aligned_path as s, c.reference_path as r, t.aligned_path as t, c.identity_i, c.identity_j,
                     c.expression, q.thresholds, q.r_expr_label, q.t_expr_label, t.raw_name as t_name, {scores}
              from qc q join candidates c using (candidate_id)
              join sources s on s.source_id = c.s_source_id join sources t on t.source_id = c.target_source_id
              where q.accepted = ? and c.reference_path is not null
              order by c.expression, q.candidate_id"""
    items = []
    for want, n in ((True, accepted), (False, rejected)):
        cur = con.execute(sql, [want])
        cols = [d[0] for d in cur.description]
        by_expr: dict[str, list[dict]] = {}
        for r in (dict(zip(cols, row, strict=True)) for row in cur.fetchall()):
            by_expr.setdefault(r["expression"] or "", []).append(r)
        picked: list[dict] = []
        while len(picked) < n and any(by_expr.values()):  # round-robin over T's expressions
            for e in sorted(by_expr):
                if by_expr[e] and len(picked) < n:
                    picked.append(by_expr[e].pop(0))
        for r in picked:
            cap = f"net: R {r['r_expr_label']}, T {r['t_expr_label']}" if r["face_found"] else "no face in R"
            items.append(item_from_row(r, caption=cap))
    return items


def item_from_row(row: dict, **extra: Any) -> SheetItem:
    """A SheetItem from a query row holding its fields and the deciding score columns."""
    keys = set(SheetItem.__dataclass_fields__) - {"scores", "reasons"}
    return SheetItem(**{k: v for k, v in row.items() if k in keys}, reasons=list(row.get("reasons") or []),
                     scores={c.score: row.get(c.score) for c in DECIDING_CHECKS},
                     **{k: v for k, v in extra.items() if k in keys})


def main(argv: list[str] | None = None) -> int:
    """`python -m publish.contact_sheet --run RUN_URL --out docs/contact_sheet.jpg`."""
    import argparse

    from manifests.artifacts import ArtifactStore

    p = argparse.ArgumentParser(prog="python -m publish.contact_sheet", description=main.__doc__)
    p.add_argument("--run", required=True, help="run folder or URL")
    p.add_argument("--out", default="docs/contact_sheet.jpg")
    p.add_argument("--accepted", type=int, default=8)
    p.add_argument("--rejected", type=int, default=4)
    args = p.parse_args(argv)
    art = ArtifactStore(args.run)

    def read(loc: str) -> bytes | None:
        try:
            buf = io.BytesIO()
            Image.fromarray(art.get(loc)).save(buf, format="PNG")
            return buf.getvalue()
        except (OSError, ValueError):
            return None

    with open(args.out, "wb") as fh:
        fh.write(sheet_jpeg(run_sheet_items(args.run, args.accepted, args.rejected), read))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
