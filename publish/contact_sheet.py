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
