"""The planner's choice rules, deterministic from the seed: S for T, j's carrier, swap-source and mouth-donor photos
(the donor: `mouth_donor`), the j drawn for T, the candidate id and its seed, and the expression label pairing
compares.

Rows are indices into PlanInputs' arrays: `expr` the label codes (0: no label), `keys` the input_key ranks (the
tie-break), `desc` the expression descriptors.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from stages.face.expression import WEIGHTS
from stages.face.mouth import ASPECT_INDEX, OPEN_ASPECT


def stable_hash(*parts: object) -> str:
    """sha256 hex digest of the parts, joined by NUL: what every planner draw and id is made from."""
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


def _distances(desc: np.ndarray, ref: int, pool: list[int]) -> np.ndarray:
    """expression_distance(desc[ref], desc[p]) for every p in pool, bit for bit (same float64 operations on the
    float32 descriptors widened exactly)."""
    return np.sqrt(np.sum(WEIGHTS * (desc[pool].astype(np.float64) - desc[ref].astype(np.float64)) ** 2, axis=1))


def most_different(t: int, others: list[int], expr: np.ndarray, keys: np.ndarray, desc: np.ndarray) -> int:
    """S for T: another expression by label when labels differ, else the most different descriptor."""
    te = expr[t]
    labelled = [o for o in others if te and expr[o] and expr[o] != te]
    pool = labelled or others
    d = _distances(desc, t, pool).tolist()
    k = keys[pool].tolist()
    return pool[max(range(len(pool)), key=lambda x: (d[x], k[x]))]


def closest(ref: int, candidates: list[int], expr: np.ndarray, keys: np.ndarray, desc: np.ndarray) -> int:
    """j's image whose expression matches ref's label, else whose descriptor is nearest (the carrier for S)."""
    re_ = expr[ref]
    same = [c for c in candidates if re_ and expr[c] == re_]
    pool = same or candidates
    d = _distances(desc, ref, pool).tolist()
    k = keys[pool].tolist()
    return pool[min(range(len(pool)), key=lambda x: (d[x], k[x]))]


def mouth_donor(t: int, candidates: list[int], expr: np.ndarray, keys: np.ndarray, desc: np.ndarray) -> int:
    """j's mouth donor for T: among j's photos whose mouth is open or closed as T's is (the descriptor's mouth
    aspect against OPEN_ASPECT), the one `closest` to T; among all of j's photos where none is."""
    t_open = bool(desc[t, ASPECT_INDEX] > OPEN_ASPECT)
    same_state = [c for c in candidates if bool(desc[c, ASPECT_INDEX] > OPEN_ASPECT) == t_open]
    return closest(t, same_state or candidates, expr, keys, desc)


def swap_source(t_sha: str, candidates: list[int], keys: np.ndarray, seed: int, round_index: int) -> int:
    """j's swap-source photo: drawn by a hash of (seed, round, T's content) among all of j's usable photos.

    Deliberately blind to expression (T's label, descriptors, the carrier): the swap must carry j's identity
    only, so T's expression has to come from the transfer stage. Choosing j's photo closest to T's expression
    (the old rule) let the swap paste the expression in (London: agreement fell when the swap photo changed).
    """
    k = keys[candidates].tolist()
    pool = [c for _, c in sorted(zip(k, candidates, strict=True), key=lambda p: p[0])]
    return pool[int(stable_hash(seed, round_index, t_sha, "swap")[:12], 16) % len(pool)]


def j_draw(t_sha: str, seed: int, round_index: int, n_others: int) -> int:
    """Which of the `n_others` identities j may be (i's sorted pool without i's cluster) T draws."""
    return int(stable_hash(seed, round_index, t_sha, "j")[:12], 16) % n_others


def candidate_id(fingerprint: str, round_index: int, seed: int, t_sha: str, s_sha: str, carrier_sha: str,
                 swap_sha: str, mouth_sha: str) -> str:
    """A hash of the content of every image a candidate uses, the round, the seed and the data-defining config."""
    return stable_hash(fingerprint, round_index, seed, t_sha, s_sha, carrier_sha, swap_sha, mouth_sha)[:16]


def item_seed(seed: int, round_index: int, cid: str) -> int:
    """The candidate's own seed (31 bits) for the generation stages."""
    return int(stable_hash(seed, round_index, cid)[:8], 16) & 0x7FFFFFFF


def with_predicted_labels(labels: list, sources: pa.Table | pa.RecordBatch) -> list:
    """Corpus expression labels, a missing one replaced by the expression net's class (sources.expression_probs)."""
    if "expression_probs" not in sources.column_names or all(labels):
        return list(labels)
    from stages.face.expression_net import labels_or_predicted

    return labels_or_predicted(labels, sources.column("expression_probs").to_pylist())
