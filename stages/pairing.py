"""Plan a round: targets T, their S, and a swap-source identity j != i, all deterministic from the seed.

Runs on the driver over compact per-source arrays (PlanInputs: no Python object per source); the embedding work
(duplicates, identity clusters) goes through SourceFeatures, and the plan streams as source rows (PLAN_INDEX_SCHEMA)
that gather_plan turns into PLAN_SCHEMA rows where the landmarks and embeddings are (pipeline/plan_features.py).
A target's candidate id is a hash of the content hashes of every image it uses, the round, the seed and the
data-defining config, so a rerun plans exactly the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from core.config import Strict
from core.splits import split_of
from stages.face.expression import DESCRIPTOR_NAMES, WEIGHTS
from stages.identity_clusters import IdentityClusters, cluster_embedding_rows, normalised_rows


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


# The plan as the planner streams it: the scalar columns it decides plus the row of each image in the sources (in
# the order they were read); gather_plan turns such rows into PLAN_SCHEMA rows from the source features.
PLAN_INDEX_SCHEMA = pa.schema([
    pa.field("candidate_id", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("identity_i", pa.string(), nullable=False),
    pa.field("identity_j", pa.string(), nullable=False),
    pa.field("t_row", pa.int64(), nullable=False),
    pa.field("s_row", pa.int64(), nullable=False),
    pa.field("carrier_row", pa.int64(), nullable=False),
    pa.field("swap_row", pa.int64(), nullable=False),
])
ROLE_ROWS = {"t": "t_row", "s": "s_row", "carrier": "carrier_row", "swap": "swap_row"}
# What gather_plan copies from the sources (landmarks, embeddings, descriptors, ids and paths): it never lives on
# the driver at scale (pipeline/plan_features.py keeps it in Ray's object store).
FEATURE_COLUMNS = ["source_id", "expression", "aligned_path", "aligned_sha256", "landmarks68", "embedding",
                   "expression_descriptor"]
# What the planner itself reads, compactly (PlanInputs); expression_probs too when the sources have it.
PLANNER_COLUMNS = ["input_key", "identity", "expression", "path", "file_sha256", "expression_descriptor"]


@dataclass
class RoundPlan:
    plan: pa.Table  # PLAN_SCHEMA
    refused: list[dict]  # rejects rows: item_id, stage, reason, detail, identity, path
    clusters: IdentityClusters | None = None  # identities that are one person (stages/identity_clusters.py)


def _h(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


def _descriptors(column: pa.ChunkedArray, dtype: type = np.float64) -> np.ndarray:
    """The expression descriptors as an (n, D) matrix (float32 values, widened exactly when dtype is float64)."""
    n = len(column)
    if n == 0:
        return np.zeros((0, len(DESCRIPTOR_NAMES)), dtype)
    flat = pa.concat_arrays([c for c in column.chunks]) if column.num_chunks != 1 else column.chunk(0)
    lengths = pc.list_value_length(flat).to_numpy(zero_copy_only=False)
    if flat.null_count or (lengths != len(DESCRIPTOR_NAMES)).any():
        bad = int(np.flatnonzero(np.isnan(lengths.astype(float)) | (lengths != len(DESCRIPTOR_NAMES)))[0])
        raise ValueError(f"descriptors must have length {len(DESCRIPTOR_NAMES)}, got {lengths[bad]} at row {bad}")
    values = pc.list_flatten(flat).to_numpy(zero_copy_only=False).astype(dtype)
    return values.reshape(n, len(DESCRIPTOR_NAMES))


def _distances(desc: np.ndarray, ref: int, pool: list[int]) -> np.ndarray:
    """expression_distance(desc[ref], desc[p]) for every p in pool, bit for bit (same float64 operations on the
    float32 descriptors widened exactly)."""
    return np.sqrt(np.sum(WEIGHTS * (desc[pool].astype(np.float64) - desc[ref].astype(np.float64)) ** 2, axis=1))


def _most_different(t: int, others: list[int], expr: np.ndarray, keys: np.ndarray, desc: np.ndarray) -> int:
    """S for T: another expression by label when labels differ, else the most different descriptor."""
    te = expr[t]
    labelled = [o for o in others if te and expr[o] and expr[o] != te]
    pool = labelled or others
    d = _distances(desc, t, pool).tolist()
    k = keys[pool].tolist()
    return pool[max(range(len(pool)), key=lambda x: (d[x], k[x]))]


def _closest(ref: int, candidates: list[int], expr: np.ndarray, keys: np.ndarray, desc: np.ndarray) -> int:
    """j's image whose expression matches ref's label, else whose descriptor is nearest."""
    re_ = expr[ref]
    same = [c for c in candidates if re_ and expr[c] == re_]
    pool = same or candidates
    d = _distances(desc, ref, pool).tolist()
    k = keys[pool].tolist()
    return pool[min(range(len(pool)), key=lambda x: (d[x], k[x]))]


def _swap_source(t_sha: str, candidates: list[int], keys: np.ndarray, seed: int, round_index: int) -> int:
    """j's swap-source photo: drawn by a hash of (seed, round, T's content) among all of j's usable photos.

    Deliberately blind to expression (T's label, descriptors, the carrier): the swap must carry j's identity
    only, so T's expression has to come from the transfer stage. Choosing j's photo closest to T's expression
    (the old rule) let the swap paste the expression in (London: agreement fell when the swap photo changed).
    """
    k = keys[candidates].tolist()
    pool = [c for _, c in sorted(zip(k, candidates, strict=True), key=lambda p: p[0])]
    return pool[int(_h(seed, round_index, t_sha, "swap")[:12], 16) % len(pool)]


def with_predicted_labels(labels: list, sources: pa.Table | pa.RecordBatch) -> list:
    """Corpus expression labels, a missing one replaced by the expression net's class (sources.expression_probs)."""
    if "expression_probs" not in sources.column_names or all(labels):
        return list(labels)
    from stages.face.expression_net import EXPRESSION_CLASSES

    probs = sources.column("expression_probs").to_pylist()
    return [lab if lab else (EXPRESSION_CLASSES[int(np.argmax(p))] if p else None)
            for lab, p in zip(labels, probs, strict=True)]


def _concat(chunks: list[pa.Array], kind: pa.DataType) -> pa.Array:
    return pa.concat_arrays([c.cast(kind) for c in chunks]) if chunks else pa.array([], kind)


def _fixed_bytes(array: pa.Array) -> np.ndarray:
    """A string column as numpy fixed-width bytes (UTF-8), from Arrow's buffers when all values have one length."""
    n = len(array)
    if array.type != pa.string():
        array = array.cast(pa.string())  # int32 offsets below
    lengths = pc.binary_length(array).to_numpy(zero_copy_only=False) if n else np.zeros(0)
    if n and not array.null_count and lengths.min() == lengths.max() > 0:
        width = int(lengths[0])
        offsets = np.frombuffer(array.buffers()[1], np.int32)[array.offset:array.offset + n + 1]
        data = np.frombuffer(array.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
        return data.view(f"S{width}").copy()
    return np.array([x.encode() for x in array.to_pylist()], np.bytes_)


class _Filler:
    """numpy rows added batch by batch: into one preallocated array when the total is known, else concatenated."""

    def __init__(self, rows: int | None) -> None:
        self.rows, self.at = rows, 0
        self.parts: list[np.ndarray] = []
        self.array: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        if self.rows is not None and self.array is None and not self.parts:
            self.array = np.empty((self.rows, *values.shape[1:]), values.dtype)
        if self.array is not None and (values.dtype.itemsize > self.array.dtype.itemsize
                                       or self.at + len(values) > len(self.array)):
            self.parts, self.array = [self.array[:self.at]], None  # wider strings, or more rows than announced
        if self.array is None:
            self.parts.append(values)
        else:
            self.array[self.at:self.at + len(values)] = values
        self.at += len(values)

    def result(self, empty: np.ndarray) -> np.ndarray:
        if self.array is not None:
            return self.array[:self.at] if self.at < len(self.array) else self.array
        return np.concatenate(self.parts) if self.parts else empty


@dataclass
class PlanInputs:
    """What the planner decides from, per source row (in the order read), a few dozen bytes each: no Python
    object per row. Strings only pairing needs whole (input_key, path: refusals) stay in Arrow."""

    keys: pa.Array  # input_key
    paths: pa.Array  # path
    key_rank: np.ndarray  # dense rank of input_key (orders exactly as the strings do)
    identity_code: np.ndarray  # index into identity_names
    identity_names: list[str]  # sorted
    label: np.ndarray  # pairing expression label (the corpus's, else the expression net's): 0 none, > 0 a label
    sha: np.ndarray  # file_sha256, fixed-width bytes
    desc: np.ndarray  # (n, D) float32 expression descriptors

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_batches(cls, batches: Iterable[pa.RecordBatch | pa.Table], rows: int | None = None) -> PlanInputs:
        """From record batches (or tables) with PLANNER_COLUMNS (and expression_probs when the sources have it),
        read one after another: only the compact columns of every batch are kept (`rows`, the total when known,
        lets them be filled in place instead of concatenated at the end)."""
        keys: list[pa.Array] = []
        paths: list[pa.Array] = []
        idents: list[pa.Array] = []
        labels, shas, descs = _Filler(rows), _Filler(rows), _Filler(rows)
        codes: dict[str, int] = {}
        for batch in batches:
            one = batch.combine_chunks() if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if not one.num_rows:
                continue
            keys.append(one.column("input_key").chunk(0))
            paths.append(one.column("path").chunk(0))
            idents.append(one.column("identity").chunk(0))
            named = with_predicted_labels(one.column("expression").to_pylist(), one)
            labels.add(np.array([codes.setdefault(x, len(codes) + 1) if x else 0 for x in named], np.int32))
            shas.add(_fixed_bytes(one.column("file_sha256").chunk(0)))
            descs.add(_descriptors(one.column("expression_descriptor"), np.float32))
            del one, named
        key_array = _concat(keys, pa.string())
        del keys
        ident = _concat(idents, pa.string())
        del idents
        names = sorted(pc.unique(ident).to_pylist())
        code = pc.index_in(ident, value_set=pa.array(names, pa.string())).to_numpy(zero_copy_only=False)
        rank = (pc.rank(key_array, tiebreaker="dense").to_numpy() if len(key_array) else np.zeros(0, np.uint64))
        return cls(key_array, _concat(paths, pa.string()), rank.astype(np.int64), code.astype(np.int32), names,
                   labels.result(np.zeros(0, np.int32)), shas.result(np.zeros(0, np.bytes_)),
                   descs.result(np.zeros((0, len(DESCRIPTOR_NAMES)), np.float32)))

    def key(self, row: int) -> str:
        return self.keys[row].as_py()

    def path(self, row: int) -> str:
        return self.paths[row].as_py()

    def identity(self, row: int) -> str:
        return self.identity_names[self.identity_code[row]]


class SourceFeatures(Protocol):
    """The embedding work of the planner, done where the embeddings are (the sources table, or Ray's object store:
    pipeline/plan_features.py)."""

    def resemblance(self, queries: list[tuple[int, list[int]]]) -> list[float] | None:
        """max cosine of row i's embedding with rows `others`, per (i, others); None when there are no
        embeddings."""
        ...

    def clusters(self, names: list[str], order: np.ndarray, starts: np.ndarray,
                 threshold: float | None) -> IdentityClusters:
        """cluster_embedding_rows over the embedding column."""
        ...


def resemblance(column: pa.ChunkedArray, queries: list[tuple[int, list[int]]]) -> list[float] | None:
    """max(emb[others] @ emb[i]) per query, emb the L2-normalised float64 embeddings (rows of one embedder)."""
    out = []
    for i, others in queries:
        emb = normalised_rows(column, [*others, i])
        if not emb.size:
            return None
        out.append(float(max(emb[:-1] @ emb[-1])) if others else float("-inf"))
    return out


@dataclass
class TableFeatures:
    """SourceFeatures over a sources table in this process (plan_round)."""

    table: pa.Table

    def resemblance(self, queries: list[tuple[int, list[int]]]) -> list[float] | None:
        return resemblance(self.table.column("embedding"), queries)

    def clusters(self, names: list[str], order: np.ndarray, starts: np.ndarray,
                 threshold: float | None) -> IdentityClusters:
        return cluster_embedding_rows(names, order, starts, self.table.column("embedding"), threshold)


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


def _drop_duplicates(inp: PlanInputs, refused: list[dict], features: SourceFeatures) -> np.ndarray:
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


def plan_round(sources: pa.Table, cfg: PairingConfig, round_index: int, *, seed: int, fingerprint: str,
               splits: dict[str, float]) -> RoundPlan:
    """The round's candidates; `splits` are the release splits j is kept in (cfg.split_closed)."""
    columns = PLANNER_COLUMNS + (["expression_probs"] if "expression_probs" in sources.column_names else [])
    inputs = PlanInputs.from_batches([sources.select(columns)])
    stream = plan_round_stream(inputs, TableFeatures(sources), cfg, round_index, chunk_rows=1 << 62, seed=seed,
                               fingerprint=fingerprint, splits=splits)
    features = sources.select(FEATURE_COLUMNS)
    tables = [gather_plan(chunk, features) for chunk in stream.chunks]
    plan = pa.concat_tables(tables).sort_by("candidate_id") if tables else PLAN_SCHEMA.empty_table()
    return RoundPlan(plan, stream.refused, stream.clusters)


def planned_size_bound(inputs: PlanInputs, cfg: PairingConfig) -> int:
    """At least the number of candidates plan_round_stream plans, known before duplicates are resolved and
    identities clustered (no embedding needed): equal to it unless duplicate files or one-person clusters leave an
    identity fewer images or no j."""
    counts = np.bincount(inputs.identity_code, minlength=len(inputs.identity_names))
    if np.count_nonzero(counts) < 2:  # one identity: no j for anyone
        return 0
    targets = counts[counts >= 2]
    cap = cfg.max_targets_per_identity
    return int(np.minimum(targets, cap).sum() if cap else targets.sum())


@dataclass
class PlanStream:
    """A round's plan made lazily: `size` candidates (known before the first chunk), `chunks` of at most
    chunk_rows PLAN_INDEX_SCHEMA rows in identity order (each chunk sorted by candidate_id; gather_plan makes
    them PLAN_SCHEMA rows), and the refusals, complete once `chunks` is exhausted."""

    size: int
    chunks: Iterator[pa.Table]
    refused: list[dict]
    clusters: IdentityClusters | None = None


@dataclass
class _Members:
    """Kept rows grouped by identity (sorted names), each identity's rows in input_key order."""

    names: list[str]
    order: np.ndarray
    starts: np.ndarray
    position: dict[str, int]

    def __call__(self, identity: str) -> list[int]:
        k = self.position[identity]
        return self.order[self.starts[k]:self.starts[k + 1]].tolist()

    def count(self, identity: str) -> int:
        k = self.position[identity]
        return int(self.starts[k + 1] - self.starts[k])


def plan_round_stream(inputs: PlanInputs, features: SourceFeatures, cfg: PairingConfig, round_index: int,
                      chunk_rows: int, *, seed: int, fingerprint: str, splits: dict[str, float]) -> PlanStream:
    """plan_round, one chunk of PLAN_INDEX_SCHEMA rows at a time: the first chunk is ready after its identities
    are planned, and no whole-round plan (nor any list column of the sources) is ever held."""
    refused: list[dict] = []
    kept = _drop_duplicates(inputs, refused, features)
    by_code = kept[np.argsort(inputs.identity_code[kept], kind="stable")]
    codes, starts = np.unique(inputs.identity_code[by_code], return_index=True)
    identities = [inputs.identity_names[c] for c in codes.tolist()]
    members = _Members(identities, by_code, np.append(starts, len(by_code)),
                       {ident: k for k, ident in enumerate(identities)})
    clusters = features.clusters(identities, members.order, members.starts, cfg.same_person_similarity)
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
    counts = {i: members.count(i) for i in identities}
    size = sum(min(counts[i], max_targets or counts[i]) for i in identities
               if counts[i] >= 2 and (len(others_of[i]) if i in others_of else len(pools[pool_of[i]]) - 1) > 0)
    return PlanStream(size, _plan_chunks(identities, members, pools, pool_of, pool_position, others_of, inputs,
                                         refused, cfg, round_index, chunk_rows, seed, fingerprint),
                      refused, clusters)


def _plan_chunks(identities: list[str], by_identity: _Members, pools: dict[str, list[str]],
                 pool_of: dict[str, str], pool_position: dict[str, dict[str, int]],
                 others_of: dict[str, list[str]], inputs: PlanInputs, refused: list[dict], cfg: PairingConfig,
                 round_index: int, chunk_rows: int, seed: int, fingerprint: str) -> Iterator[pa.Table]:
    keys, expr, desc, sha_bytes = inputs.key_rank, inputs.label, inputs.desc, inputs.sha

    def sha(row: int) -> str:
        return sha_bytes[row].decode()

    # one entry per planned candidate: (candidate_id, item_seed, identity, j, t, s, carrier, swap)
    plan: list[tuple[str, int, str, str, int, int, int, int]] = []
    for identity in identities:
        pool = pools[pool_of[identity]]
        position = pool_position[pool_of[identity]][identity]
        same_person = identity in others_of
        others = others_of.get(identity, [])
        members = by_identity(identity)
        if len(members) < 2:
            r = members[0]
            refused.append(dict(item_id=inputs.key(r), stage="pairing", reason="single_image_identity",
                                detail="identity has one usable image: no S for it (still used as a swap source)",
                                identity=identity, path=inputs.path(r)))
            continue
        n_others = len(others) if same_person else len(pool) - 1  # j: the sorted pool without i('s cluster)
        if not n_others:
            for r in members:
                refused.append(dict(item_id=inputs.key(r), stage="pairing", reason="no_other_identity",
                                    detail="the corpus has a single identity", identity=identity,
                                    path=inputs.path(r)))
            continue
        targets = members[: cfg.max_targets_per_identity] if cfg.max_targets_per_identity else members
        for t in targets:
            s = _most_different(t, [m for m in members if m != t], expr, keys, desc)
            t_sha = sha(t)
            pick = int(_h(seed, round_index, t_sha, "j")[:12], 16) % n_others
            j = others[pick] if same_person else pool[pick if pick < position else pick + 1]
            j_members = by_identity(j)
            carrier = _closest(s, j_members, expr, keys, desc)
            swap = _swap_source(t_sha, j_members, keys, seed, round_index)
            cid = _h(fingerprint, round_index, seed, t_sha, sha(s), sha(carrier), sha(swap))[:16]
            item_seed = int(_h(seed, round_index, cid)[:8], 16) & 0x7FFFFFFF
            plan.append((cid, item_seed, identity, j, t, s, carrier, swap))
            if len(plan) >= chunk_rows:
                plan.sort(key=lambda p: p[0])
                yield _index_table(plan, round_index)
                plan = []
    if plan:
        plan.sort(key=lambda p: p[0])
        yield _index_table(plan, round_index)


def _index_table(plan: list[tuple], round_index: int) -> pa.Table:
    """PLAN_INDEX_SCHEMA rows of planned candidates."""
    columns = [list(c) for c in zip(*plan, strict=True)] if plan else [[] for _ in range(8)]
    cid, item_seed, ident_i, ident_j, t, s, carrier, swap = columns
    values = [cid, [round_index] * len(plan), item_seed, ident_i, ident_j, t, s, carrier, swap]
    return pa.Table.from_arrays([pa.array(v, f.type) for v, f in zip(values, PLAN_INDEX_SCHEMA, strict=True)],
                                schema=PLAN_INDEX_SCHEMA)


def gather_plan(index: pa.Table, features: pa.Table) -> pa.Table:
    """PLAN_SCHEMA rows of PLAN_INDEX_SCHEMA rows: each image's columns taken from `features` (FEATURE_COLUMNS of
    the sources, in the order the planner read them) by row. Columns after the index ones (attempt) follow."""
    n = index.num_rows

    def gather(col: str, role: str) -> pa.ChunkedArray:
        return features.column(col).take(index.column(ROLE_ROWS[role]))

    cols: dict[str, object] = dict(
        candidate_id=index["candidate_id"], round=index["round"], seed=index["seed"],
        identity_i=index["identity_i"], identity_j=index["identity_j"], expression=gather("expression", "t"),
        target_source_id=gather("source_id", "t"), s_source_id=gather("source_id", "s"),
        carrier_source_id=gather("source_id", "carrier"), swap_source_id=gather("source_id", "swap"),
        t_aligned_path=gather("aligned_path", "t"), t_aligned_sha256=gather("aligned_sha256", "t"),
        s_aligned_path=gather("aligned_path", "s"), s_aligned_sha256=gather("aligned_sha256", "s"),
        carrier_aligned_path=gather("aligned_path", "carrier"), swap_aligned_path=gather("aligned_path", "swap"),
        t_landmarks68=gather("landmarks68", "t"), s_landmarks68=gather("landmarks68", "s"),
        carrier_landmarks68=gather("landmarks68", "carrier"), swap_landmarks68=gather("landmarks68", "swap"),
        t_embedding=gather("embedding", "t"), s_embedding=gather("embedding", "s"),
        j_embedding=gather("embedding", "swap"), t_descriptor=gather("expression_descriptor", "t"),
        status=["ok"] * n, reject_stage=[None] * n, reject_reason=[None] * n, reject_detail=[None] * n)
    arrays = []
    for f in PLAN_SCHEMA:
        v = cols[f.name]
        arrays.append(v.cast(f.type) if isinstance(v, pa.ChunkedArray | pa.Array) else pa.array(v, f.type))
    table = pa.Table.from_arrays(arrays, schema=PLAN_SCHEMA)
    for name in index.column_names:
        if name not in PLAN_INDEX_SCHEMA.names:
            table = table.append_column(index.schema.field(name), index[name])
    return table


def landmarks_array(flat: list[float]) -> np.ndarray:
    return np.asarray(flat, dtype=np.float32).reshape(-1, 2)
