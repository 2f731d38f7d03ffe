"""Bad and unusual input through a real round: every case gets its reason row (or, for valid but unusual
formats, a usable source), and the round finishes. Files are real, made with PIL/OpenCV/zlib from London faces."""

from __future__ import annotations

import csv
import fnmatch
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from manifests.query import connect
from manifests.store import ManifestStore
from pipeline.run_idi import run_idi
from stages.config import CorpusConfig
from stages.corpus import list_corpus
from tests.conftest import DEMO_CORPUS, london_identities
from tests.hardening.conftest import round_config

pytestmark = pytest.mark.slow

UNICODE_ID = "Zoë Ångström 李"


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def header_only_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height RGB, with one row of data: a bomb costs 200 bytes to make."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * (3 * width + 1))) + _png_chunk(b"IEND", b""))


def build_corpus(root: Path) -> tuple[Path, dict[str, tuple[str, str]]]:
    """Corpus folders + an index CSV. Returns (index path, {input key pattern: (kind, expected outcomes)}).

    Outcomes, "+"-joined: "source" (a usable face) and "<stage>:<reason>" reject rows (index refusals are
    committed as stage "ingest")."""
    ids = london_identities()
    good, fmt_src, dup_src, single_src, noexif_src = ids[:3], ids[3], ids[4], ids[5], ids[6]
    uni_src = ids[7]
    files: dict[str, bytes] = {}
    expect: dict[str, tuple[str, str]] = {}
    for ident in good:
        for e in ("neutral", "smiling"):
            files[f"{ident}/{e}.jpg"] = (DEMO_CORPUS / ident / f"{e}.jpg").read_bytes()
            expect[f"{ident}/{e}.jpg"] = ("good", "source")
    for e, name in (("neutral", "neutral face.jpg"), ("smiling", "smiling é 笑.jpg")):
        files[f"{UNICODE_ID}/{name}"] = (DEMO_CORPUS / uni_src / f"{e}.jpg").read_bytes()
        expect[f"{UNICODE_ID}/{name}"] = ("unicode and spaces in the path", "source")

    src_bytes = (DEMO_CORPUS / fmt_src / "neutral.jpg").read_bytes()
    im = Image.open(io.BytesIO(src_bytes)).convert("RGB")
    png = _save(im, "PNG")
    rgba = im.convert("RGBA")
    alpha = np.full(im.size[::-1], 255, np.uint8)
    alpha[:48] = 0
    alpha[48:96] = 128
    rgba.putalpha(Image.fromarray(alpha))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; displayed after a 90 degree clockwise turn
    ok, rgb16 = cv2.imencode(".png", cv2.cvtColor(np.asarray(im).astype(np.uint16) * 257, cv2.COLOR_RGB2BGR))
    assert ok
    gif = io.BytesIO()
    im.save(gif, format="GIF", save_all=True, append_images=[im.transpose(Image.Transpose.ROTATE_180)],
            duration=100, loop=0)
    formats = {
        "fmt_cmyk/cmyk.jpg": ("CMYK JPEG", _save(im.convert("CMYK"), "JPEG", quality=95)),
        "fmt_rgb16/rgb16.png": ("16-bit RGB PNG", rgb16.tobytes()),
        "fmt_grey16/grey16.png": ("16-bit grey PNG",
                                  _save(Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257), "PNG")),
        "fmt_palette/palette.png": ("palette PNG", _save(im.convert("P", palette=Image.Palette.ADAPTIVE), "PNG")),
        "fmt_alpha/alpha.png": ("RGBA PNG with transparency", _save(rgba, "PNG")),
        "fmt_exif/rotated.jpg": ("EXIF-rotated JPEG",
                                 _save(im.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95,
                                       exif=exif.tobytes())),
        "fmt_gif/animated.gif": ("animated GIF", gif.getvalue()),
    }
    for path, (kind, data) in formats.items():
        files[path] = data
        # a usable face, in an identity with a single image: also the single-image case
        expect[path] = (kind, "source+pairing:single_image_identity")
    # Sideways without the EXIF tag: proves the EXIF case is only found because it was turned upright.
    noexif = Image.open(DEMO_CORPUS / noexif_src / "neutral.jpg").convert("RGB")
    files["fmt_sideways/sideways.jpg"] = _save(noexif.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95)
    expect["fmt_sideways/sideways.jpg"] = ("sideways photo without EXIF", "ingest:no_face")

    corrupt_jpg = bytearray(src_bytes)
    mid = len(corrupt_jpg) // 2
    corrupt_jpg[mid:mid + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    corrupt_png = bytearray(png)
    i = corrupt_png.index(b"IDAT") + 100
    corrupt_png[i:i + 500] = b"\x07" * 500
    bad = {
        "bad/corrupt.jpg": ("corrupt JPEG", bytes(corrupt_jpg), "decode_error"),
        "bad/truncated.jpg": ("truncated JPEG", src_bytes[: len(src_bytes) // 2], "decode_error"),
        "bad/corrupt.png": ("corrupt PNG", bytes(corrupt_png), "decode_error"),
        "bad/truncated.png": ("truncated PNG", png[: len(png) // 2], "decode_error"),
        "bad/empty.jpg": ("zero-byte file", b"", "empty_file"),
        "bad/not_an_image.png": ("text with an image extension", b"name,identity\nfoo,bar\n" * 40, "decode_error"),
        "bad/bomb.png": ("30000x30000 PNG (decompression bomb)", header_only_png(30000, 30000), "too_many_pixels"),
        "bad/big.png": ("7000x7000 PNG over ingest.max_pixels", header_only_png(7000, 7000), "too_many_pixels"),
    }
    for path, (kind, data, reason) in bad.items():
        files[path] = data
        expect[path] = (kind, f"ingest:{reason}")

    dup = (DEMO_CORPUS / dup_src / "neutral.jpg").read_bytes()
    files["dup_a/a.jpg"] = files["dup_b/b.jpg"] = dup
    # issue 11: one copy is kept (here neither identity has another image: the first path in sorted order)
    expect["dup_a/a.jpg"] = ("same image under two identities, kept copy", "source+pairing:single_image_identity")
    expect["dup_b/b.jpg"] = ("same image under two identities, other copy", "source+pairing:duplicate_image")
    files["single/only.jpg"] = (DEMO_CORPUS / single_src / "neutral.jpg").read_bytes()
    expect["single/only.jpg"] = ("identity with one image", "source+pairing:single_image_identity")

    corpus = root / "corpus"
    for rel, data in files.items():
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        (corpus / rel).write_bytes(data)
    (root / "outside.jpg").write_bytes(src_bytes)  # exists, but outside the root: must not be read
    refused = {
        "../outside.jpg": ("index path escaping the root", "ingest:path_outside_corpus"),
        "bad/../../outside.jpg": ("index path escaping the root via a subfolder", "ingest:path_outside_corpus"),
        str(root / "outside.jpg"): ("absolute path outside the root", "ingest:path_outside_corpus"),
        "file:///etc/hostname": ("file URL outside the root", "ingest:path_outside_corpus"),
        "http://example.com/face.jpg": ("URL of another scheme", "ingest:foreign_url"),
        "s3://bucket/face.jpg": ("URL of another scheme", "ingest:foreign_url"),
    }
    expect = {f"{rel.split('/', 1)[0]}/{rel}": v for rel, v in expect.items()}
    expect.update({f"intruder/{rel}": v for rel, v in refused.items()})
    index = root / "index.csv"
    with index.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["identity", "path", "expression"])
        for rel in files:
            ident = rel.split("/", 1)[0]
            label = "neutral" if "neutral" in rel else "smiling" if "smiling" in rel else ""
            w.writerow([ident, rel, label])
        for rel in refused:
            w.writerow(["intruder", rel, ""])
        w.writerow(["001", "001/neutral.jpg", "neutral"])  # the same entry twice
        w.writerow(["", "bad/empty.jpg", ""])  # no identity
    expect["001/001/neutral.jpg#row-*"] = ("repeated index row", "ingest:duplicate_entry")
    expect["index-row-*"] = ("index row without identity", "ingest:bad_index_row")
    return index, expect


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("bad")
    index, expect = build_corpus(root)
    # painted mouths: every good target is generated (none refused as no_mouth_donor), so QC sees most of them
    cfg = round_config(root / "corpus", root / "runs", f"corpus.index={index}",
                       "expression_transfer.painted_mouths=true")
    result = run_idi(cfg)
    return cfg, ManifestStore.open(result["timing"]["run_url"]), result, expect


def test_every_bad_input_has_its_reason_and_the_round_finishes(bad_run):
    cfg, store, result, expect = bad_run
    con = connect(store)
    sources = {k for (k,) in con.execute("select input_key from sources").fetchall()}
    outcomes: dict[str, set[str]] = {k: {"source"} for k in sources}
    for item, stage, reason in con.execute("select item_id, stage, reason from rejects").fetchall():
        outcomes.setdefault(item, set()).add(f"{stage}:{reason}")
    problems = []
    for pattern, (kind, outcome) in expect.items():
        matched = [k for k in outcomes if fnmatch.fnmatchcase(k, pattern)] if "*" in pattern else [pattern]
        got = set().union(*(outcomes.get(k, set()) for k in matched)) if matched else set()
        if got != set(outcome.split("+")):
            problems.append(f"{kind} ({pattern}): want {outcome}, got {sorted(got)}")
    assert not problems, "\n".join(problems)
    # the round ran on the good identities (3 London + the unicode one: 8 targets), every decision recorded
    (r0,) = result["summary"]["rounds"]
    assert r0["planned"] == 8 and sum(r0["reasons"].values()) == 8
    assert con.execute("select count(*) from qc where face_found").fetchone()[0] >= 6
    # nothing outside the root was read: no row anywhere names its bytes
    assert not con.execute("select count(*) from sources where path like '%outside.jpg'").fetchone()[0]


def test_reason_details_say_why(bad_run):
    _, store, _, _ = bad_run
    con = connect(store)
    detail = dict(con.execute("select item_id, detail from rejects").fetchall())
    assert "30000x30000" in detail["bad/bad/bomb.png"] and "max_pixels" in detail["bad/bad/bomb.png"] \
        or "exceeds limit" in detail["bad/bad/bomb.png"]
    assert "7000x7000 = 49000000 pixels > max_pixels=40000000" in detail["bad/bad/big.png"]
    assert "outside the corpus root" in detail["intruder/../outside.jpg"]
    assert "'http'" in detail["intruder/http://example.com/face.jpg"]


def test_folder_listing_keeps_unicode_names_and_refuses_other_extensions(bad_run, tmp_path):
    cfg, *_ = bad_run
    (Path(cfg.corpus.root) / "single" / "notes.txt").write_text("not an image")
    try:
        listing = list_corpus(CorpusConfig(root=cfg.corpus.root))
    finally:
        (Path(cfg.corpus.root) / "single" / "notes.txt").unlink()
    keys = set(listing.items.column("input_key").to_pylist())
    assert f"{UNICODE_ID}/smiling é 笑.jpg" in keys and f"{UNICODE_ID}/neutral face.jpg" in keys
    assert [(r["input_key"], r["reason"]) for r in listing.refused] == [("single/notes.txt", "unsupported_extension")]
