"""The identity part of QC's self-test: the identity checks run on *real* photos, and the identities merged.

Each real photo of an identity j with two or more photos plays a perfect R: T is a photo of another identity i
(drawn with `seed`), j's swap photo another photo of j, and j's gallery centroid leaves R out (as a generated R
is not in the gallery). The scores go through qc/decide.py's failed_checks with the run's thresholds, the code
path that judges generated R, so every identity reason it returns on a real photo is a false reject. The
identities merged are the groups the same-person threshold joins (qc/same_person.py, the planner's rule).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from qc.decide import (
    REASON_IDENTITY_AMBIGUOUS,
    REASON_IDENTITY_LEAK,
    REASON_SWAP_FAILED,
    Scores,
    Thresholds,
    failed_checks,
)
from qc.identity_margin import MAX_PHOTOS, held_out_false_reject, loo_margins
from qc.same_person import merged_groups

IDENTITY_REASONS = (REASON_IDENTITY_LEAK, REASON_IDENTITY_AMBIGUOUS, REASON_SWAP_FAILED)
_GROUPS_LISTED = 20


def identity_selftest(identities: list[str] | np.ndarray, embeddings: np.ndarray, thresholds: Thresholds,
                      same_person_similarity: float | None, *, max_false_reject: float | None = None,
                      cluster_of: dict[str, str] | None = None, seed: int = 0,
                      max_photos: int = MAX_PHOTOS) -> dict:
    """Identity false rejects on real photos of j and identity clusters merged, for one run's sources.

    Returns photos (real photos scored), identity_false_reject_rate (any identity check failed),
    margin_false_reject_rate (the gallery margin alone), false_reject_by_reason, held_out_margin_false_reject_rate
    (when `max_false_reject` is given: the margin calibrated leave-one-identity-out at that target, so the rate is
    out of sample; None otherwise), identities_merged (identities in a merged group), merged_groups (their count)
    and merged (the first groups, sorted names). `cluster_of` (identity -> cluster, the planner's identity_clusters
    rows) gives the merges as the planner made them; else they are computed here with the planner's rule at
    `same_person_similarity`."""
    ident = np.asarray(identities)
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    loo = loo_margins(ident, e, max_photos)
    margin_j = loo.margin_j()
    rng = np.random.default_rng(seed)
    rows_of = {name: np.flatnonzero(ident == name) for name in loo.names}
    reasons: Counter[str] = Counter()
    failed = 0
    for k, (row, own) in enumerate(zip(loo.rows.tolist(), loo.own.tolist(), strict=True)):
        i = int(rng.integers(len(loo.names) - 1))
        i += i >= own  # any identity but j
        t = int(rng.choice(rows_of[loo.names[i]]))
        swap = int(rng.choice([r for r in rows_of[loo.names[own]].tolist() if r != row]))
        s = Scores(face_found=True, id_sim_rt=float(e[row] @ e[t]), id_sim_rj=float(e[row] @ e[swap]),
                   id_margin_ji=float(loo.sim_own[k] - e[row] @ loo.centroids[i]), id_margin_j=float(margin_j[k]))
        hits = [r for r in failed_checks(s, thresholds) if r in IDENTITY_REASONS]
        failed += bool(hits)
        reasons.update(hits)
    n = len(loo.rows)
    if cluster_of is not None:
        members: dict[str, list[str]] = {}
        for name in sorted(cluster_of):
            members.setdefault(cluster_of[name], []).append(name)
        groups = sorted(g for g in members.values() if len(g) > 1)
    else:
        groups = merged_groups(ident, e, same_person_similarity)
    held_out = None
    if max_false_reject is not None and n:
        held_out = held_out_false_reject(loo.own, margin_j, max_false_reject)
    return dict(photos=n, identity_false_reject_rate=failed / n if n else None,
                margin_false_reject_rate=float(np.mean(margin_j < thresholds.min_identity_margin)) if n else None,
                false_reject_by_reason={r: reasons[r] / n for r in IDENTITY_REASONS} if n else {},
                held_out_margin_false_reject_rate=held_out, identities_merged=sum(len(g) for g in groups),
                merged_groups=len(groups), merged=groups[:_GROUPS_LISTED])
