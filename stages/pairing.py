"""Plan a round: targets T, their S, and a swap-source identity j != i, all deterministic from the seed.

Runs on the driver over the `sources` table (small columns only). A target's candidate id is a hash of
the content hashes of every image it uses, the round, the seed and the data-defining config, so a rerun
plans exactly the same rows.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from core.config import Strict
from core.splits import split_of
from stages.face.expression import DESCRIPTOR_NAMES, WEIGHTS
from stages.identity_clusters import IdentityClusters, cluster_identities, embedding_matrix


class PairingConfig(Strict):
    max_targets_per_identity: int | None = Field(None, ge=1)
    # Pick the swap-source identity j from i's release split (release.splits), so that no triple straddles
    # two splits and releases keep every triple; falls back to any identity when i's split has no other.
    split_closed: bool = True
    # Identities whose mean embeddings have cosine >= this are one person under several names
    # (stages/identity_clusters.py): j is never drawn from i's cluster and releases split by cluster. Default
    # for dlib (London set, `ciep calibrate-identity`: different people max 0.949, same person median 0.988);
    # ArcFace needs its own value. null: no clustering.
    same_person_similarity: float | None = Field(0.96, ge=-1, le=1)


PLAN_SCHEMA = pa.schema([
    pa.field("candidate_id", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("identity_i", pa.string(), nullable=False),
    pa.field("identity_j", pa.string(), nullable=False),
    pa.field("expression", pa.string()),
    pa.field("target_source_id", pa.string(), nullable=False),
    pa.field("s_source_id", pa.string(), nullable=False),
    pa.field("carrier_source_id", pa.string(), nullable=False),
    pa.field("swap_source_id", pa.string(), nullable=False),
    pa.field("t_aligned_path", pa.string()),
    pa.field("t_aligned_sha256", pa.string()),
    pa.field("s_aligned_path", pa.string()),
    pa.field("s_aligned_sha256", pa.string()),
    pa.field("carrier_aligned_path", pa.string()),
    pa.field("swap_aligned_path", pa.string()),
    pa.field("t_landmarks68", pa.list_(pa.float32())),
    pa.field("s_landmarks68", pa.list_(pa.float32())),
    pa.field("carrier_landmarks68", pa.list_(pa.float32())),
    pa.field("swap_landmarks68", pa.list_(pa.float32())),
    pa.field("t_embedding", pa.list_(pa.float32())),
    pa.field("s_embedding", pa.list_(pa.float32())),
    pa.field("j_embedding", pa.list_(pa.float32())),
    pa.field("t_descriptor", pa.list_(pa.float32())),
    pa.field("status", pa.string()),
    pa.field("reject_stage", pa.string()),
    pa.field("reject_reason", pa.string()),
    pa.field("reject_detail", pa.string()),
])

PLAN_SOURCE_COLUMNS = ["source_id", "input_key", "identity", "expression", "path", "file_sha256",
                       "aligned_path", "aligned_sha256", "landmarks68", "embedding", "expression_descriptor"]


@dataclass
class RoundPlan:
    plan: pa.Table  # PLAN_SCHEMA
    refused: list[dict]  # rejects rows: item_id, stage, reason, detail, identity, path
    clusters: IdentityClusters | None = None  # identities that are one person (stages/identity_clusters.py)


def _h(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


# Small columns read into Python; the list columns (landmarks, embeddings) stay in Arrow and are gathered by index.
_SCALAR_COLUMNS = ("source_id", "input_key", "identity", "expression", "path", "file_sha256", "aligned_path",
                   "aligned_sha256")


def _drop_duplicates(rows: dict[str, list], refused: list[dict], emb: np.ndarray | None = None) -> list[int]:
    """The same file content twice: keep one copy, reject the others as duplicate_image.

    Within one identity the first path in sorted order is kept. Across identities the copy is kept in the
    identity it most resembles: the highest cosine between the copy's embedding and that identity's other
    images (those with other content); ties, and identities with no other image, fall back to the first path
    in sorted order. So a real identity's image copied into another folder survives where it belongs.
    Returns the kept row indices sorted by input_key."""
    keys, identity, sha, path = rows["input_key"], rows["identity"], rows["file_sha256"], rows["path"]
    by_sha: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(sha):
        by_sha[h].append(i)
    by_identity: dict[str, list[int]] = defaultdict(list)
    for i, ident in enumerate(identity):
        by_identity[ident].append(i)
    kept = []
    for h, group in by_sha.items():
        group.sort(key=lambda i: keys[i])
        keep = group[0]
        identities = sorted({identity[i] for i in group})
        if len(identities) > 1 and emb is not None and emb.size:
            def resemblance(i: int, h: str = h) -> float:
                others = [o for o in by_identity[identity[i]] if sha[o] != h]
                return float(max(emb[others] @ emb[i])) if others else float("-inf")
            score = {i: resemblance(i) for i in group}
            best = max(score.values())
            keep = min((i for i in group if score[i] == best), key=lambda i: keys[i])
        kept.append(keep)
        for i in group:
            if i == keep:
                continue
            where = f" under identity {identity[keep]!r}, which it resembles most" if identity[i] != identity[keep] \
                else ""
            refused.append(dict(item_id=keys[i], stage="pairing", reason="duplicate_image",
                                detail=f"same file content as {keys[keep]} (kept{where})", identity=identity[i],
                                path=path[i]))
    return sorted(kept, key=lambda i: keys[i])


def _descriptors(column: pa.ChunkedArray) -> np.ndarray:
    """The expression descriptors as an (n, D) float64 matrix (float32 values widened exactly)."""
    n = len(column)
    if n == 0:
        return np.zeros((0, len(DESCRIPTOR_NAMES)))
    flat = pa.concat_arrays([c for c in column.chunks]) if column.num_chunks != 1 else column.chunk(0)
    lengths = pc.list_value_length(flat).to_numpy(zero_copy_only=False)
    if flat.null_count or (lengths != len(DESCRIPTOR_NAMES)).any():
        bad = int(np.flatnonzero(np.isnan(lengths.astype(float)) | (lengths != len(DESCRIPTOR_NAMES)))[0])
        raise ValueError(f"descriptors must have length {len(DESCRIPTOR_NAMES)}, got {lengths[bad]} at row {bad}")
    values = pc.list_flatten(flat).to_numpy(zero_copy_only=False).astype(np.float64)
    return values.reshape(n, len(DESCRIPTOR_NAMES))


def _distances(desc: np.ndarray, ref: int, pool: list[int]) -> np.ndarray:
    """expression_distance(desc[ref], desc[p]) for every p in pool, bit for bit (same float64 operations)."""
    return np.sqrt(np.sum(WEIGHTS * (desc[pool] - desc[ref]) ** 2, axis=1))


def _most_different(t: int, others: list[int], expr: list, keys: list[str], desc: np.ndarray) -> int:
    """S for T: another expression by label when labels differ, else the most different descriptor."""
    te = expr[t]
    labelled = [o for o in others if te and expr[o] and expr[o] != te]
    pool = labelled or others
    d = _distances(desc, t, pool).tolist()
    return pool[max(range(len(pool)), key=lambda k: (d[k], keys[pool[k]]))]


def _closest(ref: int, candidates: list[int], expr: list, keys: list[str], desc: np.ndarray) -> int:
    """j's image whose expression matches ref's label, else whose descriptor is nearest."""
    re_ = expr[ref]
    same = [c for c in candidates if re_ and expr[c] == re_]
    pool = same or candidates
    d = _distances(desc, ref, pool).tolist()
    return pool[min(range(len(pool)), key=lambda k: (d[k], keys[pool[k]]))]


def _swap_source(t_sha: str, candidates: list[int], keys: list[str], seed: int, round_index: int) -> int:
    """j's swap-source photo: drawn by a hash of (seed, round, T's content) among all of j's usable photos.

    Deliberately blind to expression (T's label, descriptors, the carrier): the swap must carry j's identity
    only, so T's expression has to come from the transfer stage. Choosing j's photo closest to T's expression
    (the old rule) let the swap paste the expression in (London: agreement fell when the swap photo changed).
    """
    pool = sorted(candidates, key=lambda c: keys[c])
    return pool[int(_h(seed, round_index, t_sha, "swap")[:12], 16) % len(pool)]


def with_predicted_labels(labels: list, sources: pa.Table) -> list:
    """Corpus expression labels, a missing one replaced by the expression net's class (sources.expression_probs)."""
    if "expression_probs" not in sources.column_names or all(labels):
        return list(labels)
    from stages.face.expression_net import EXPRESSION_CLASSES

    probs = sources.column("expression_probs").to_pylist()
    return [lab if lab else (EXPRESSION_CLASSES[int(np.argmax(p))] if p else None)
            for lab, p in zip(labels, probs, strict=True)]


def plan_round(sources: pa.Table, cfg: PairingConfig, round_index: int, *, seed: int, fingerprint: str,
               splits: dict[str, float]) -> RoundPlan:
    """The round's candidates; `splits` are the release splits j is kept in (cfg.split_closed)."""
    stream = plan_round_stream(sources, cfg, round_index, chunk_rows=1 << 62, seed=seed, fingerprint=fingerprint,
                               splits=splits)
    tables = list(stream.chunks)
    plan = pa.concat_tables(tables).sort_by("candidate_id") if tables else PLAN_SCHEMA.empty_table()
    return RoundPlan(plan, stream.refused, stream.clusters)


@dataclass
class PlanStream:
    """A round's plan made lazily: `size` candidates (known before the first chunk), `chunks` of at most
    chunk_rows PLAN_SCHEMA rows in identity order (each chunk sorted by candidate_id), and the refusals, complete
    once `chunks` is exhausted."""

    size: int
    chunks: Iterator[pa.Table]
    refused: list[dict]
    clusters: IdentityClusters | None = None


def plan_round_stream(sources: pa.Table, cfg: PairingConfig, round_index: int, chunk_rows: int, *, seed: int,
                      fingerprint: str, splits: dict[str, float]) -> PlanStream:
    """plan_round, one chunk at a time: the first chunk is ready after its identities are planned, and the list
    columns (landmarks, embeddings) are gathered per chunk, so no whole-round plan is ever held."""
    refused: list[dict] = []
    src = sources.select(PLAN_SOURCE_COLUMNS)
    rows = {c: src.column(c).to_pylist() for c in _SCALAR_COLUMNS}
    # S and carrier choice: the corpus label, else the expression net's (ingest); never used for the swap source
    rows["pairing_expression"] = with_predicted_labels(rows["expression"], sources)
    desc = _descriptors(src.column("expression_descriptor"))
    emb = embedding_matrix(src.column("embedding"))
    if emb.size:  # cosine everywhere (ingest writes L2-normalised embeddings; this makes sure)
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    by_identity: dict[str, list[int]] = defaultdict(list)
    for i in _drop_duplicates(rows, refused, emb):
        by_identity[rows["identity"][i]].append(i)
    identities = sorted(by_identity)
    clusters = cluster_identities(by_identity, emb, cfg.same_person_similarity)
    cluster_of = clusters.cluster_of
    # j is drawn from i's release split (pairing.split_closed) when that split has another identity.
    pools: dict[str, list[str]] = {"": identities}
    pool_of: dict[str, str] = {ident: "" for ident in identities}
    if cfg.split_closed:
        for ident in identities:
            pools.setdefault(split_of(cluster_of[ident], dict(splits)), []).append(ident)
        pool_of = {ident: name for name, members in pools.items() if name and len(members) > 1
                   for ident in members}
        pool_of = {ident: pool_of.get(ident, "") for ident in identities}
    pool_position = {name: {ident: k for k, ident in enumerate(members)} for name, members in pools.items()}
    # j is never the same person: other identities of i's cluster are left out of its pool (only identities of a
    # multi-identity cluster get an explicit list; the rest draw from their sorted pool minus themselves)
    others_of: dict[str, list[str]] = {}
    for ident in identities:
        if clusters.size_of[cluster_of[ident]] > 1:
            others = [x for x in pools[pool_of[ident]] if cluster_of[x] != cluster_of[ident]]
            # i's split holds only its own person: draw from every identity
            others_of[ident] = others or [x for x in identities if cluster_of[x] != cluster_of[ident]]
    max_targets = cfg.max_targets_per_identity
    size = sum(min(len(by_identity[i]), max_targets or len(by_identity[i])) for i in identities
               if len(by_identity[i]) >= 2
               and (len(others_of[i]) if i in others_of else len(pools[pool_of[i]]) - 1) > 0)
    return PlanStream(size, _plan_chunks(identities, by_identity, pools, pool_of, pool_position, others_of, rows,
                                         src, desc, refused, cfg, round_index, chunk_rows, seed, fingerprint),
                      refused, clusters)


def _plan_chunks(identities: list[str], by_identity: dict[str, list[int]], pools: dict[str, list[str]],
                 pool_of: dict[str, str], pool_position: dict[str, dict[str, int]],
                 others_of: dict[str, list[str]], rows: dict[str, list], src: pa.Table, desc: np.ndarray,
                 refused: list[dict], cfg: PairingConfig, round_index: int,
                 chunk_rows: int, seed: int, fingerprint: str) -> Iterator[pa.Table]:
    keys, expr, sha = rows["input_key"], rows["pairing_expression"], rows["file_sha256"]
    # one entry per planned candidate: (candidate_id, item_seed, identity, j, t, s, carrier, swap)
    plan: list[tuple[str, int, str, str, int, int, int, int]] = []
    for identity in identities:
        pool = pools[pool_of[identity]]
        position = pool_position[pool_of[identity]][identity]
        same_person = identity in others_of
        others = others_of.get(identity, [])
        members = by_identity[identity]
        if len(members) < 2:
            r = members[0]
            refused.append(dict(item_id=keys[r], stage="pairing", reason="single_image_identity",
                                detail="identity has one usable image: no S for it (still used as a swap source)",
                                identity=identity, path=rows["path"][r]))
            continue
        n_others = len(others) if same_person else len(pool) - 1  # j: the sorted pool without i('s cluster)
        if not n_others:
            for r in members:
                refused.append(dict(item_id=keys[r], stage="pairing", reason="no_other_identity",
                                    detail="the corpus has a single identity", identity=identity,
                                    path=rows["path"][r]))
            continue
        targets = members[: cfg.max_targets_per_identity] if cfg.max_targets_per_identity else members
        for t in targets:
            s = _most_different(t, [m for m in members if m != t], expr, keys, desc)
            pick = int(_h(seed, round_index, sha[t], "j")[:12], 16) % n_others
            j = others[pick] if same_person else pool[pick if pick < position else pick + 1]
            carrier = _closest(s, by_identity[j], expr, keys, desc)
            swap = _swap_source(sha[t], by_identity[j], keys, seed, round_index)
            cid = _h(fingerprint, round_index, seed, sha[t], sha[s], sha[carrier], sha[swap])[:16]
            item_seed = int(_h(seed, round_index, cid)[:8], 16) & 0x7FFFFFFF
            plan.append((cid, item_seed, identity, j, t, s, carrier, swap))
            if len(plan) >= chunk_rows:
                plan.sort(key=lambda p: p[0])
                yield _plan_table(plan, rows, src, round_index)
                plan = []
    if plan:
        plan.sort(key=lambda p: p[0])
        yield _plan_table(plan, rows, src, round_index)


def _plan_table(plan: list[tuple], rows: dict[str, list], src: pa.Table, round_index: int) -> pa.Table:
    """PLAN_SCHEMA rows: scalars from Python, list columns gathered from the sources table by index."""
    n = len(plan)
    columns = (list(c) for c in zip(*plan, strict=True)) if plan else ([],) * 8
    cid, item_seed, ident_i, ident_j, t, s, carrier, swap = columns
    pick = {"t": t, "s": s, "carrier": carrier, "swap": swap}

    def scalar(col: str, role: str) -> list:
        values = rows[col]
        return [values[i] for i in pick[role]]

    def gather(col: str, role: str) -> pa.ChunkedArray:
        return src.column(col).take(pa.array(pick[role], pa.int64()))

    cols: dict[str, object] = dict(
        candidate_id=cid, round=[round_index] * n, seed=item_seed, identity_i=ident_i, identity_j=ident_j,
        expression=scalar("expression", "t"), target_source_id=scalar("source_id", "t"),
        s_source_id=scalar("source_id", "s"), carrier_source_id=scalar("source_id", "carrier"),
        swap_source_id=scalar("source_id", "swap"), t_aligned_path=scalar("aligned_path", "t"),
        t_aligned_sha256=scalar("aligned_sha256", "t"), s_aligned_path=scalar("aligned_path", "s"),
        s_aligned_sha256=scalar("aligned_sha256", "s"), carrier_aligned_path=scalar("aligned_path", "carrier"),
        swap_aligned_path=scalar("aligned_path", "swap"), t_landmarks68=gather("landmarks68", "t"),
        s_landmarks68=gather("landmarks68", "s"), carrier_landmarks68=gather("landmarks68", "carrier"),
        swap_landmarks68=gather("landmarks68", "swap"), t_embedding=gather("embedding", "t"),
        s_embedding=gather("embedding", "s"), j_embedding=gather("embedding", "swap"),
        t_descriptor=gather("expression_descriptor", "t"), status=["ok"] * n, reject_stage=[None] * n,
        reject_reason=[None] * n, reject_detail=[None] * n)
    arrays = []
    for f in PLAN_SCHEMA:
        v = cols[f.name]
        arrays.append(v.cast(f.type) if isinstance(v, pa.ChunkedArray) else pa.array(v, f.type))
    return pa.Table.from_arrays(arrays, schema=PLAN_SCHEMA)


def landmarks_array(flat: list[float]) -> np.ndarray:
    return np.asarray(flat, dtype=np.float32).reshape(-1, 2)
