"""decode_image on real and hand-built files: every PIL mode, EXIF, animation, truncation and bombs."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from core.hashing import sha256_bytes
from stages.face.image_io import ImageRejected, decode_image, decode_png, encode_jpeg, encode_png
from tests.conftest import DEMO_CORPUS

MAX = 40_000_000


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _reason(data: bytes, **kw) -> str:
    with pytest.raises(ImageRejected) as exc:
        decode_image(data, kw.pop("max_pixels", MAX), **kw)
    assert exc.value.detail
    return exc.value.reason


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit grey all-zero PNG of width x height, compressed to a small file."""
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    chunks = []
    block = row * 256
    for _ in range(height // 256):
        chunks.append(comp.compress(block))
    chunks.append(comp.compress(row * (height % 256)))
    chunks.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(chunks)) + \
        _png_chunk(b"IEND", b"")


def test_real_jpeg_decodes_to_rgb_uint8():
    rgb = decode_image((DEMO_CORPUS / "001" / "neutral.jpg").read_bytes(), MAX)
    assert rgb.dtype == np.uint8 and rgb.shape == (512, 512, 3) and rgb.flags.c_contiguous


def test_truncated_jpeg_is_rejected_not_half_decoded():
    data = (DEMO_CORPUS / "001" / "neutral.jpg").read_bytes()
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert _reason(data[: len(data) // 2]) == "decode_error"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_empty_text_and_oversized_files():
    assert _reason(b"") == "empty_file"
    assert _reason(b"this is a text file, not a JPEG\n" * 10) == "decode_error"
    assert _reason(b"\xff\xd8\xff\xe0garbage") == "decode_error"
    data = (DEMO_CORPUS / "001" / "neutral.jpg").read_bytes()
    assert _reason(data, max_file_bytes=1000) == "file_too_large"


def test_pixel_limit_is_checked_from_the_header():
    data = (DEMO_CORPUS / "001" / "neutral.jpg").read_bytes()
    assert _reason(data, max_pixels=512 * 512 - 1) == "too_many_pixels"
    assert decode_image(data, 512 * 512).shape == (512, 512, 3)


def test_decompression_bomb_refused_before_decoding(monkeypatch):
    data = bomb_png(30000, 30000)
    assert len(data) < 1_000_000

    def no_decoding(self, *a, **k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    # Our own header check, with PIL's guard switched off.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert Image.open(io.BytesIO(data)).size == (30000, 30000)
    assert _reason(data) == "too_many_pixels"
    # With max_pixels above PIL's own DecompressionBombError limit, PIL's refusal is reported the same way.
    monkeypatch.undo()
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert _reason(data, max_pixels=10**12) == "too_many_pixels"


def test_sixteen_bit_grey_png_is_scaled_to_eight_bit():
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)
    ok, buf = cv2.imencode(".png", values)
    assert ok
    assert Image.open(io.BytesIO(buf.tobytes())).mode.startswith("I")
    rgb = decode_image(buf.tobytes(), MAX)
    assert rgb.shape == (4, 4, 3)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 128, 255])
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_sixteen_bit_colour_png():
    bgr = np.zeros((4, 4, 3), np.uint16)
    bgr[..., 2] = 65535  # red
    bgr[..., 1] = 32896
    ok, buf = cv2.imencode(".png", bgr)
    rgb = decode_image(buf.tobytes(), MAX)
    assert abs(int(rgb[0, 0, 0]) - 255) <= 1 and abs(int(rgb[0, 0, 1]) - 128) <= 1 and rgb[0, 0, 2] == 0


def test_palette_png_with_transparency_goes_on_white():
    im = Image.new("P", (8, 8), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (0, 0, 4, 8))
    data = _save(im, "PNG", transparency=0)  # palette index 0 (red) is transparent
    rgb = decode_image(data, MAX)
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 255])  # left half: opaque blue
    np.testing.assert_array_equal(rgb[0, 7], [255, 255, 255])  # right half: transparent -> white


def test_grey_alpha_and_rgba_composite_on_white():
    la = Image.fromarray(np.dstack([np.full((4, 4), 0, np.uint8), np.full((4, 4), 0, np.uint8)]), "LA")
    np.testing.assert_array_equal(decode_image(_save(la, "PNG"), MAX)[0, 0], [255, 255, 255])
    half = np.dstack([np.zeros((4, 4), np.uint8), np.full((4, 4), 128, np.uint8)])
    v = decode_image(_save(Image.fromarray(half, "LA"), "PNG"), MAX)[0, 0]
    assert (np.abs(v.astype(int) - 127) <= 1).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 255
    np.testing.assert_array_equal(decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), MAX)[0, 0], [0, 200, 0])
    grey = decode_image(_save(Image.new("L", (5, 3), 77), "PNG"), MAX)
    assert grey.shape == (3, 5, 3) and (grey == 77).all()


def test_cmyk_jpeg():
    im = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    data = _save(im, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    rgb = decode_image(data, MAX)
    assert rgb.shape == (16, 16, 3)
    r, g, b = (int(v) for v in rgb[8, 8])
    assert r > 200 and g < 60 and b < 60


def test_exif_rotated_jpeg_comes_out_upright():
    upright = np.zeros((40, 60, 3), np.uint8)
    upright[:20] = (255, 0, 0)  # red top half
    upright[20:] = (0, 0, 255)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # as a sideways camera would save it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    data = _save(stored, "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).size == (40, 60)
    rgb = decode_image(data, MAX)
    assert rgb.shape == (40, 60, 3)
    assert rgb[5, 30, 0] > 200 and rgb[5, 30, 2] < 60  # top is red
    assert rgb[35, 30, 2] > 200 and rgb[35, 30, 0] < 60  # bottom is blue


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    rgb = decode_image(data, MAX)
    assert rgb.shape == (10, 10, 3)
    assert rgb[5, 5, 0] > 200 and rgb[5, 5, 2] < 60


def test_float_and_int32_modes():
    f = Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4), "F")
    rgb = decode_image(_save(f, "TIFF"), MAX)
    assert rgb[0, 0, 0] == 0 and rgb[3, 3, 0] == 255
    i32 = Image.fromarray(np.full((4, 4), 100, np.int32), "I")
    assert (decode_image(_save(i32, "TIFF"), MAX) == 100).all()


def test_png_jpeg_round_trips_and_hash():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    png = encode_png(rgb)
    np.testing.assert_array_equal(decode_png(png), rgb)
    np.testing.assert_array_equal(decode_image(png, MAX), rgb)
    jpg = encode_jpeg(np.full((32, 48, 3), 120, np.uint8), quality=90)
    assert jpg[:2] == b"\xff\xd8"
    assert np.abs(decode_image(jpg, MAX).astype(int) - 120).max() <= 2
    assert sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
