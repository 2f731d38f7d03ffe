"""Duplicate files: the same content twice is kept once, in the identity it belongs to (a duplicate_image refusal
for every other copy)."""

from __future__ import annotations

import numpy as np

from pipeline.planning.features import SourceFeatures
from pipeline.planning.inputs import PlanInputs


def _digest64(sha: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """A 64-bit digest of each fixed-width bytes value (equal values, equal digests)."""
    n, width = len(sha), sha.dtype.itemsize
    out = np.zeros(n, np.uint64)
    words = -(-width // 8)
    for c0 in range(0, n if width else 0, chunk):
        part = sha[c0:c0 + chunk]
        padded = np.zeros((len(part), words * 8), np.uint8)
        padded[:, :width] = part.view(np.uint8).reshape(len(part), width)
        mixed = np.zeros(len(part), np.uint64)
        for w in range(words):  # mix the words so that hex digests use all their bits
            mixed = (mixed * np.uint64(0x9E3779B97F4A7C15)) ^ padded[:, 8 * w:8 * w + 8].copy().view(np.uint64)[:, 0]
        out[c0:c0 + chunk] = mixed
    return out


def drop_duplicates(inp: PlanInputs, refused: list[dict], features: SourceFeatures) -> np.ndarray:
    """The same file content twice: keep one copy, reject the others as duplicate_image.

    Within one identity the first path in sorted order is kept. Across identities the copy is kept in the
    identity it most resembles: the highest cosine between the copy's embedding and that identity's other
    images (those with other content); ties, and identities with no other image, fall back to the first path
    in sorted order. So a real identity's image copied into another folder survives where it belongs.
    Returns the kept row indices sorted by input_key."""
    n = len(inp)
    if not n:
        return np.zeros(0, np.int64)
    sha = inp.sha
    # candidates by a 64-bit digest of the content hash (8 bytes a row to sort, not the strings), then exact groups
    _, inverse, counts = np.unique(_digest64(sha), return_inverse=True, return_counts=True)
    maybe = np.flatnonzero(counts[inverse.reshape(-1)] > 1)
    del inverse, counts
    by_sha: dict[bytes, list[int]] = {}
    for i in maybe.tolist():  # in row order: groups in order of first occurrence
        by_sha.setdefault(sha[i].tobytes(), []).append(i)
    groups = [g for g in by_sha.values() if len(g) > 1]
    kept = np.ones(n, bool)
    kept[[i for g in groups for i in g]] = False
    first = np.arange(n)  # a row's first occurrence of its content (the tie-break of equal input_keys)
    group_of: dict[int, int] = {}
    for g, group in enumerate(groups):
        first[group] = group[0]
        group_of.update((i, g) for i in group)
    keys, identity = inp.key_rank, inp.identity_code
    rows_of: dict[int, list[int]] = {}  # identity code -> its rows (before dropping), in row order
    queries: list[tuple[int, list[int]]] = []
    for g, group in enumerate(groups):
        group.sort(key=lambda i: keys[i])
        if len({identity[i] for i in group}) > 1:
            for i in group:
                if identity[i] not in rows_of:
                    rows_of[identity[i]] = np.flatnonzero(identity == identity[i]).tolist()
                queries.append((i, [o for o in rows_of[identity[i]] if group_of.get(o) != g]))
    scores = features.resemblance(queries) if queries else None
    score_of = dict(zip((q[0] for q in queries), scores, strict=True)) if scores is not None else None
    for group in groups:
        keep = group[0]
        if score_of is not None and len({identity[i] for i in group}) > 1:
            best = max(score_of[i] for i in group)
            keep = min((i for i in group if score_of[i] == best), key=lambda i: keys[i])
        kept[keep] = True
        for i in group:
            if i == keep:
                continue
            where = f" under identity {inp.identity(keep)!r}, which it resembles most" \
                if identity[i] != identity[keep] else ""
            refused.append(dict(item_id=inp.key(i), stage="pairing", reason="duplicate_image",
                                detail=f"same file content as {inp.key(keep)} (kept{where})",
                                identity=inp.identity(i), path=inp.path(i)))
    rows = np.flatnonzero(kept)
    # sorted by input_key; equal keys (never in practice) in order of first occurrence of their content, as before
    return rows[np.lexsort((first[rows], keys[rows]))]
