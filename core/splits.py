"""Which release split an identity belongs to; shared by pairing (j stays in i's split) and releases."""

from __future__ import annotations

import hashlib


def split_of(identity: str, splits: dict[str, float]) -> str:
    """The split an identity belongs to: a stable hash against the cumulative ratios (config order)."""
    u = int(hashlib.sha256(f"ciep-split:{identity}".encode()).hexdigest()[:16], 16) / 2**64
    acc = 0.0
    names = [n for n, r in splits.items() if r > 0]
    for name in names:
        acc += splits[name]
        if u < acc:
            return name
    return names[-1]
