"""The `pairing` config section: how the planner picks targets and the swap-source identity j."""

from __future__ import annotations

from pydantic import Field

from core.config import Strict


class PairingConfig(Strict):
    max_targets_per_identity: int | None = Field(None, ge=1)
    # Pick the swap-source identity j from i's release split (release.splits), so that no triple straddles
    # two splits and releases keep every triple; falls back to any identity when i's split has no other.
    split_closed: bool = True
    # Identities whose mean embeddings have cosine >= this are one person under several names
    # (pipeline/planning/clusters.py): j is never drawn from i's cluster and releases split by cluster. Default
    # for dlib (London set, `ciep calibrate-identity`: different people max 0.949, same person median 0.988);
    # ArcFace needs its own value. null: no clustering.
    same_person_similarity: float | None = Field(0.96, ge=-1, le=1)
