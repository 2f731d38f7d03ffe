"""What the E-Adapter trains on: triple rows decoded to pixels and conditions, served as endless shuffled batches.

Triple rows (a Ray Data dataset or a list of dicts):
  s_path, t_path       image URLs (fsspec), aligned face crops; S = identity i other expression, T = i with e
  r_path               refined mode only: expression e on another identity
  s_embedding          identity embedding of S (list of floats, the adapter's identity_dim, e.g. dlib 128-d)
  t_landmarks, r_landmarks   optional (68, 2) or flat 136 floats in the crop's pixel coordinates; they give the
                       face-hull mask of the expression template (without them: a centred ellipse)

mode "base":    identity from S, expression from R = augmented T (flip, colour jitter, small affine), target T
mode "refined": identity from S, expression from R, target T (IDI triples)
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from PIL import Image

from core.location import Location
from stages.eadapter.conditions import masked_face

Mode = Literal["base", "refined"]
CACHE_LIMIT_BYTES = 512 * 1024 * 1024


def _read_rgb(files: Location, url: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    with files.open_url(url) as fh:
        img = Image.open(io.BytesIO(fh.read())).convert("RGB")
    orig = img.size
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC)), orig


def _landmarks(value: Any, orig: tuple[int, int], size: int) -> np.ndarray | None:
    """(68, 2) landmarks from a row value (nested or flat), rescaled from the original image to `size`."""
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.dtype == object:
        arr = np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in arr])
    lm = arr.astype(np.float32).reshape(68, 2)
    return lm * np.array([size / orig[0], size / orig[1]], np.float32)


def decode_triples(batch: dict[str, np.ndarray], mode: Mode, resolution: int,
                   files: Location | None = None) -> dict[str, np.ndarray]:
    """Ray Data map_batches function: image URLs (read with `files`' storage options) -> T pixels, masked
    expression template, S embedding."""
    files = files or Location(".")
    n = len(batch["t_path"])
    targets, templates, embeds = [], [], []
    for i in range(n):
        t_img, t_orig = _read_rgb(files, str(batch["t_path"][i]), resolution)
        if mode == "refined":
            r_img, r_orig = _read_rgb(files, str(batch["r_path"][i]), resolution)
            lm = _landmarks(batch["r_landmarks"][i], r_orig, resolution) if "r_landmarks" in batch else None
        else:
            r_img = t_img
            lm = _landmarks(batch["t_landmarks"][i], t_orig, resolution) if "t_landmarks" in batch else None
        targets.append(t_img)
        templates.append(masked_face(r_img, lm))
        embeds.append(np.asarray(batch["s_embedding"][i], np.float32).reshape(-1))
    return {"t_image": np.stack(targets), "expr_image": np.stack(templates), "s_embedding": np.stack(embeds)}


def shuffled_batches(shard: Any, batch_size: int, rng: np.random.Generator,
                     cache_limit_bytes: int = CACHE_LIMIT_BYTES) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches of a Ray Data shard (anything with Ray's DataIterator.iter_batches).

    A shard that fits in cache_limit_bytes is read once and reshuffled in memory each epoch (a streaming
    re-read per epoch costs more than a training step on small data); a larger one is streamed every epoch.
    """
    cache: list[dict[str, np.ndarray]] | None = []
    size = 0
    rows = 0
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", local_shuffle_buffer_size=256,
                                    local_shuffle_seed=int(rng.integers(2**31))):
        rows += len(batch["t_image"])
        if cache is not None:
            size += sum(v.nbytes for v in batch.values())
            cache = cache + [batch] if size <= cache_limit_bytes else None
        yield batch
    if rows == 0:
        raise ValueError("the training dataset shard is empty")
    if cache is None:
        while True:
            yield from shard.iter_batches(batch_size=batch_size, batch_format="numpy", local_shuffle_buffer_size=256,
                                          local_shuffle_seed=int(rng.integers(2**31)))
    table = {k: np.concatenate([b[k] for b in cache]) for k in cache[0]}
    while True:
        order = rng.permutation(rows)
        for i in range(0, rows - batch_size + 1 if rows >= batch_size else 1, batch_size):
            idx = order[i:i + batch_size]
            yield {k: v[idx] for k, v in table.items()}
