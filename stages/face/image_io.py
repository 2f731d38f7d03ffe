"""Safe image decoding to RGB uint8 (size checks before decoding, EXIF upright, every PIL mode) and PNG/JPEG I/O."""

from __future__ import annotations

import io
import warnings
from struct import error as struct_error

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# A truncated file must be refused, never half-decoded with grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False

REASONS = ("decode_error", "empty_file", "too_many_pixels", "file_too_large", "unsupported_image")


class ImageRejected(Exception):
    """An input image that cannot be used; `reason` is a stable code, `detail` says why in words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _to_uint8(arr: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
    """Scale single-channel pixel data to uint8: 16-bit by /257 (rounded), wider ints by their range, floats 0..1."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind in "ui":
        a = arr.astype(np.int64)
        lo, hi = int(a.min(initial=0)), int(a.max(initial=0))
        if sixteen_bit or (lo >= 0 and 255 < hi <= 65535):
            return ((a + 128) // 257).clip(0, 255).astype(np.uint8)
        if lo >= 0 and hi <= 255:
            return a.astype(np.uint8)
        return ((a - lo) * 255 // max(hi - lo, 1)).astype(np.uint8)
    f = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    scale = 255.0 if f.max(initial=0.0) <= 1.0 else 1.0
    return np.clip(np.round(f * scale), 0, 255).astype(np.uint8)


def _on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    return np.round(rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode to an RGB uint8 array; transparency is composited on white."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La"):
        if mode in ("RGBa", "La"):
            im = im.convert(mode.replace("a", "A"))
        arr = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        return _on_white(arr[..., :3], arr[..., 3])
    if mode in ("L", "1"):
        g = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode.startswith("I;16") or mode in ("I", "F"):
        g = _to_uint8(np.asarray(im), sixteen_bit=mode.startswith("I;16"))
        return np.repeat(g[..., None], 3, axis=2)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    raise ImageRejected("unsupported_image", f"image mode {mode!r} is not supported")


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the image as stored rather than refusing it."""
    try:
        return ImageOps.exif_transpose(im) or im
    except (OSError, ValueError, KeyError, TypeError, SyntaxError, struct_error):
        return im


def decode_image(data: bytes, max_pixels: int, max_file_bytes: int = 64 << 20) -> np.ndarray:
    """Decode image bytes to an upright RGB uint8 HxWx3 array, or raise ImageRejected.

    The byte size and the header's pixel count are checked before any pixel is decoded (decompression
    bombs); animated images give their first frame.
    """
    n = len(data)
    if n == 0:
        raise ImageRejected("empty_file", "the file has 0 bytes")
    if n > max_file_bytes:
        raise ImageRejected("file_too_large", f"{n} bytes > max_file_bytes={max_file_bytes}")
    try:
        with warnings.catch_warnings():
            # Our header check below is the authoritative guard; PIL's own bomb *error* is still honoured.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im: Image.Image = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:
                raise ImageRejected("decode_error", "not a recognised image format") from None
            w, h = im.size
            if w <= 0 or h <= 0:
                raise ImageRejected("unsupported_image", f"image size {w}x{h}")
            if w * h > max_pixels:
                raise ImageRejected("too_many_pixels", f"{w}x{h} = {w * h} pixels > max_pixels={max_pixels}")
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            im = _upright(im)
            rgb = _to_rgb(im)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as err:
        raise ImageRejected("too_many_pixels", str(err)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, MemoryError) as err:
        raise ImageRejected("decode_error", f"{type(err).__name__}: {err}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageRejected("unsupported_image", f"decoded to shape {rgb.shape}")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """RGB uint8 array from PNG (or any trusted image) bytes; no size limits, use decode_image for inputs."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.ascontiguousarray(_to_rgb(im))
