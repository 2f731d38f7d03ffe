"""Which release split an identity belongs to; shared by pairing (j stays in i's split) and releases."""

from __future__ import annotations

import hashlib
from collections.abc import Callable


def split_of(identity: str, splits: dict[str, float]) -> str:
    """The split an identity belongs to: a stable hash against the cumulative ratios (config order)."""
    return splitter(splits)(identity)


def splitter(splits: dict[str, float]) -> Callable[[str], str]:
    """split_of with `splits` fixed (its cumulative ratios summed once, as split_of sums them): for many identities."""
    names = [n for n, r in splits.items() if r > 0]
    bounds, acc = [], 0.0
    for name in names:
        acc += splits[name]
        bounds.append(acc)
    pairs = list(zip(names, bounds, strict=True))

    def split(identity: str) -> str:
        u = int(hashlib.sha256(f"ciep-split:{identity}".encode()).hexdigest()[:16], 16) / 2**64
        for name, bound in pairs:
            if u < bound:
                return name
        return names[-1]

    return split
