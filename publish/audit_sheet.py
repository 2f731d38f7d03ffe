"""The audit's contact sheet: each sampled R's lower face, enlarged and numbered, without its QC decision (blind
labelling; qc/audit.py)."""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageDraw

FRAME = 256  # the aligned frame the stages write
LOWER_FACE = (48, 136, 208, 248)  # box of the aligned frame holding the mouth and chin (x0, y0, x1, y1)
ZOOM = 3  # the fixture labels of tests/fixtures/r_mouths* were made at 3x


def _placeholder(size: tuple[int, int], text: str) -> Image.Image:
    img = Image.new("RGB", size, (60, 60, 60))
    ImageDraw.Draw(img).text((8, 8), text, fill=(255, 255, 255))
    return img


def lower_face(data: bytes | None) -> Image.Image:
    """R's lower face at ZOOM x (nearest neighbour: artifacts stay sharp); a grey tile when R cannot be read."""
    x0, y0, x1, y1 = LOWER_FACE
    size = ((x1 - x0) * ZOOM, (y1 - y0) * ZOOM)
    if data is None:
        return _placeholder(size, "R missing")
    try:
        img = Image.open(io.BytesIO(data)).convert("RGB")
    except OSError:
        return _placeholder(size, "R unreadable")
    if img.size != (FRAME, FRAME):
        img = img.resize((FRAME, FRAME), Image.Resampling.BILINEAR)
    return img.crop(LOWER_FACE).resize(size, Image.Resampling.NEAREST)


def audit_sheet_png(rows: list[dict], read: Callable[[str], bytes | None], columns: int = 5) -> bytes:
    """A PNG of every row's R (rows: index, r_path; at least one), `columns` per line, each numbered with its
    index."""
    tiles = [lower_face(read(r["r_path"])) for r in rows]
    w, h = tiles[0].size
    label_h = 16
    lines = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * w, lines * (h + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (row, tile) in enumerate(zip(rows, tiles, strict=True)):
        x, y = (k % columns) * w, (k // columns) * (h + label_h)
        draw.text((x + 4, y + 2), f"#{row['index']}", fill=(0, 0, 0))
        sheet.paste(tile, (x, y + label_h))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
