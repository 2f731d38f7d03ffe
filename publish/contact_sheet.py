"""Contact sheets of the QC report: S | R | T strips with their scores, worst first, as embedded JPEGs."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

from manifests.schemas import QC_SCORES

TILE = 112
# Nominal scale of each margin so that different scores compare: identity margins in cosine units / 0.1,
# expression and sharpness margins relative to their threshold.
_IDENTITY_SCALE = 0.1


@dataclass
class SheetItem:
    """One triple (or candidate) on a sheet: image locators, scores, decision."""

    item_id: str
    round: int
    accepted: bool
    reason: str
    reasons: list[str]
    id_sim_rt: float | None
    id_sim_rj: float | None
    expr_dist_rt: float | None
    sharpness: float | None
    face_found: bool | None
    s: str | None  # locators the report's reader understands (URL or release-relative path)
    r: str | None
    t: str | None
    identity_i: str | None = None
    identity_j: str | None = None
    expression: str | None = None
    thresholds: str | None = None
    caption: str | None = None  # a second caption line (the README's sheet)


def margin(item: SheetItem, thresholds: dict) -> float:
    """Smallest normalised distance to a threshold on the passing side (negative: that check failed)."""
    if item.face_found is False:
        return -math.inf
    m = []
    t = thresholds
    if item.id_sim_rt is not None and t.get("max_leak_similarity") is not None:
        m.append((t["max_leak_similarity"] - item.id_sim_rt) / _IDENTITY_SCALE)
    if item.id_sim_rj is not None and t.get("min_swap_similarity") is not None:
        m.append((item.id_sim_rj - t["min_swap_similarity"]) / _IDENTITY_SCALE)
    if item.expr_dist_rt is not None and t.get("max_expression_distance"):
        m.append((t["max_expression_distance"] - item.expr_dist_rt) / t["max_expression_distance"])
    if item.sharpness is not None and t.get("min_sharpness"):
        m.append((item.sharpness - t["min_sharpness"]) / t["min_sharpness"])
    if not m:  # failed before QC could score it (e.g. expression transfer error)
        return -math.inf
    return min(m)


def worst_first(items: list[SheetItem], thresholds: dict) -> list[SheetItem]:
    """Rejected: most failed checks, then the largest violation first. Accepted: closest to a threshold first."""
    def key(it: SheetItem) -> tuple:
        th = json.loads(it.thresholds) if it.thresholds else thresholds
        return (-len(it.reasons), margin(it, th), it.item_id)
    return sorted(items, key=key)


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


def _score(name: str, value: float | None, failed: bool) -> str:
    text = "–" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
    cls = ' class="fail"' if failed else ""
    return f"<span{cls}>{name} {text}</span>"


_FAILS = {"id_sim_rt": "identity_leak", "id_sim_rj": "swap_failed", "expr_dist_rt": "expression_lost",
          "sharpness": "qc_blurry"}


def sheet_html(items: list[SheetItem], read: Callable[[str], bytes | None], columns: int = 3) -> str:
    """An HTML grid of S | R | T strips with ids, decision and scores (failed checks highlighted)."""
    if not items:
        return '<p class="empty">none</p>'
    cells = []
    for it in items:
        imgs = [read(loc) if loc else None for loc in (it.s, it.r, it.t)]
        uri = "data:image/jpeg;base64," + base64.b64encode(strip_jpeg(imgs)).decode()
        failed = set(it.reasons)
        scores = " ".join(_score(n, getattr(it, n), _FAILS[n] in failed)
                          for n in QC_SCORES)
        who = f"{it.identity_i or '?'} &larr; {it.identity_j or '?'}, {html.escape(it.expression or '–')}"
        verdict = "accepted" if it.accepted else ", ".join(it.reasons) or it.reason
        cells.append(
            f'<figure class="triple {"ok" if it.accepted else "bad"}">'
            f'<img src="{uri}" alt="S | R | T of {html.escape(it.item_id)}" width="{3 * TILE + 8}" '
            f'height="{TILE}"><figcaption><b>{html.escape(it.item_id)}</b> round {it.round} · {who}<br>'
            f'<span class="verdict">{html.escape(verdict)}</span><br>{scores}</figcaption></figure>')
    return f'<div class="sheet" style="--cols:{columns}">' + "".join(cells) + "</div>"


# -- the README's contact sheet: one JPEG of captioned strips ---------------------------------------------------

def sheet_jpeg(items: list[SheetItem], read: Callable[[str], bytes | None], columns: int = 2,
               quality: int = 88) -> bytes:
    """A JPEG grid of S | R | T strips, each captioned with ids, decision and QC scores."""
    strip_w, cap_h, pad = 3 * TILE + 8, 48, 8
    rows = max(1, math.ceil(len(items) / columns))
    out = Image.new("RGB", (columns * (strip_w + pad) + pad, rows * (TILE + cap_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for k, it in enumerate(items):
        x, y = pad + (k % columns) * (strip_w + pad), pad + (k // columns) * (TILE + cap_h + pad)
        with Image.open(io.BytesIO(strip_jpeg([read(loc) if loc else None for loc in (it.s, it.r, it.t)]))) as im:
            out.paste(im.convert("RGB"), (x, y))
        verdict = "accepted" if it.accepted else "rejected: " + ", ".join(it.reasons or [it.reason])
        who = f"i {it.identity_i or '?'}, j {it.identity_j or '?'}, T labelled {it.expression or '-'}"
        draw.text((x, y + TILE + 2), who, fill=(30, 30, 30))
        colour = (0, 110, 0) if it.accepted else (170, 0, 0)
        draw.text((x, y + TILE + 15), verdict if len(verdict) <= 58 else verdict[:56] + "..", fill=colour)
        draw.text((x, y + TILE + 28), it.caption or "", fill=(60, 60, 60))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def run_sheet_items(run_url: str, accepted: int = 8, rejected: int = 4) -> list[SheetItem]:
    """Accepted and rejected candidates of a run's latest decision, spread over T's expressions, deterministic."""
    from manifests.query import connect
    from manifests.store import ManifestStore

    con = connect(ManifestStore.open(run_url))
    sql = """select q.candidate_id, q.round, q.accepted, q.reason, q.reasons, q.id_sim_rt, q.id_sim_rj,
                    q.expr_dist_rt, q.sharpness, q.face_found, s.aligned_path, c.reference_path, t.aligned_path,
                    c.identity_i, c.identity_j, c.expression, q.thresholds, q.id_margin_ji, q.expr_prob_dist_rt,
                    q.expr_gain, q.r_expr_label, q.t_expr_label, q.expr_prob_dist_ct, q.expr_contrast_st
             from qc q join candidates c using (candidate_id)
             join sources s on s.source_id = c.s_source_id join sources t on t.source_id = c.target_source_id
             where q.accepted = ? and c.reference_path is not null
             order by c.expression, q.candidate_id"""
    items = []
    for want, n in ((True, accepted), (False, rejected)):
        rows = con.execute(sql, [want]).fetchall()
        by_expr: dict[str, list] = {}
        for r in rows:
            by_expr.setdefault(r[15] or "", []).append(r)
        picked: list = []
        while len(picked) < n and any(by_expr.values()):  # round-robin over T's expressions
            for e in sorted(by_expr):
                if by_expr[e] and len(picked) < n:
                    picked.append(by_expr[e].pop(0))
        for r in picked:
            gain = f"{r[19]:.2f}" if r[19] is not None and (r[22] or 0) >= 0.25 else "n/a"  # only when due
            contrast = f"{r[23]:.1f}" if r[23] is not None else "n/a"
            cap = (f"leak {r[5]:.2f} swap {r[6]:.2f} margin {r[17] or 0:.2f} | R {r[20]}, T {r[21]}, "
                   f"tv {r[18] or 0:.2f}, gain {gain}, c {contrast}") if r[9] else "no face in R"
            items.append(SheetItem(item_id=r[0], round=r[1], accepted=r[2], reason=r[3], reasons=list(r[4] or []),
                                   id_sim_rt=r[5], id_sim_rj=r[6], expr_dist_rt=r[7], sharpness=r[8],
                                   face_found=r[9], s=r[10], r=r[11], t=r[12], identity_i=r[13], identity_j=r[14],
                                   expression=r[15], thresholds=r[16], caption=cap))
    return items


def main(argv: list[str] | None = None) -> int:
    """`python -m qc.contact_sheet --run RUN_URL --out docs/contact_sheet.jpg`."""
    import argparse

    from manifests.artifacts import ArtifactStore

    p = argparse.ArgumentParser(prog="python -m qc.contact_sheet", description=main.__doc__)
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
