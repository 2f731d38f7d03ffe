"""Plan a round: targets T, their S, and a swap-source identity j != i, all deterministic from the seed.

Runs over compact per-source arrays (inputs.PlanInputs: no Python object per source), in the planning task of a run
(ray_planner.py: the driver holds none of them) or in this process (plan_round); the embedding
work (duplicates, identity clusters) goes through features.SourceFeatures, and the plan streams as source rows
(PLAN_INDEX_SCHEMA) that gather.gather_plan turns into PLAN_SCHEMA rows where the landmarks and embeddings are
(ray_features.py). A target's candidate id is a hash of the content hashes of every image it uses, the round, the
seed and the data-defining config (rules.py), so a rerun plans exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from core.splits import splitter
from manifests.schemas import PLAN_FEATURE_COLUMNS, PLAN_INDEX_SCHEMA, PLAN_SCHEMA
from pipeline.planning.clusters import IdentityClusters
from pipeline.planning.config import PairingConfig
from pipeline.planning.dedup import drop_duplicates
from pipeline.planning.features import SourceFeatures, TableFeatures
from pipeline.planning.gather import gather_plan
from pipeline.planning.inputs import PLANNER_COLUMNS, PlanInputs
from pipeline.planning.rules import (
    candidate_id,
    closest,
    item_seed,
    j_draw,
    most_different,
    mouth_donor,
    swap_source,
)


@dataclass
class RoundPlan:
    plan: pa.Table  # PLAN_SCHEMA
    refused: list[dict]  # rejects rows: item_id, stage, reason, detail, identity, path
    clusters: IdentityClusters | None = None  # identities that are one person (clusters.py)


def plan_round(sources: pa.Table, cfg: PairingConfig, round_index: int, *, seed: int, fingerprint: str,
               splits: dict[str, float], skip_labels: frozenset[str] = frozenset()) -> RoundPlan:
    """The round's candidates; `splits` are the release splits j is kept in (cfg.split_closed); targets labelled
    with one of `skip_labels` are refused."""
    columns = PLANNER_COLUMNS + (["expression_probs"] if "expression_probs" in sources.column_names else [])
    inputs = PlanInputs.from_batches([sources.select(columns)])
    stream = plan_round_stream(inputs, TableFeatures(sources), cfg, round_index, chunk_rows=1 << 62, seed=seed,
                               fingerprint=fingerprint, splits=splits, skip_labels=skip_labels)
    features = sources.select(PLAN_FEATURE_COLUMNS)
    tables = [gather_plan(chunk, features) for chunk in stream.chunks]
    plan = pa.concat_tables(tables).sort_by("candidate_id") if tables else PLAN_SCHEMA.empty_table()
    return RoundPlan(plan, stream.refused, stream.clusters)


def planned_size_bound(inputs: PlanInputs, cfg: PairingConfig) -> int:
    """At least the number of candidates plan_round_stream plans, known before duplicates are resolved and
    identities clustered (no embedding needed): equal to it unless duplicate files or one-person clusters leave an
    identity fewer images or no j."""
    return size_bound(np.bincount(inputs.identity_code, minlength=len(inputs.identity_names)), cfg)


def size_bound(counts: np.ndarray, cfg: PairingConfig) -> int:
    """planned_size_bound from the images per identity (what the driver keeps: ray_planner.InputsSummary)."""
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


def plan_round_stream(inputs: PlanInputs, features: SourceFeatures, cfg: PairingConfig, round_index: int,
                      chunk_rows: int, *, seed: int, fingerprint: str, splits: dict[str, float],
                      skip_labels: frozenset[str] = frozenset()) -> PlanStream:
    """plan_round, one chunk of PLAN_INDEX_SCHEMA rows at a time: the first chunk is ready after its identities
    are planned, and no whole-round plan (nor any list column of the sources) is ever held. Targets whose
    expression label is in `skip_labels` (classes the QC self-test cannot judge) are refused, a row each."""
    refused: list[dict] = []
    kept = drop_duplicates(inputs, refused, features)
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
        split = splitter(dict(splits))
        for ident in identities:
            pools.setdefault(split(cluster_of[ident]), []).append(ident)
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
    counts = np.diff(members.starts)  # images per identity, in `identities` order
    pool_sizes = {name: len(pool) for name, pool in pools.items()}
    has_j = np.array([(len(others_of[i]) if i in others_of else pool_sizes[pool_of[i]] - 1) > 0 for i in identities],
                     bool)
    planned = counts[(counts >= 2) & has_j]
    size = int(np.minimum(planned, max_targets).sum() if max_targets else planned.sum())
    skip_codes = frozenset(inputs.label_codes[lab] for lab in skip_labels if lab in inputs.label_codes)
    return PlanStream(size, _plan_chunks(identities, members, pools, pool_of, pool_position, others_of, inputs,
                                         refused, cfg, round_index, chunk_rows, seed, fingerprint, skip_codes),
                      refused, clusters)


def _plan_chunks(identities: list[str], by_identity: _Members, pools: dict[str, list[str]],
                 pool_of: dict[str, str], pool_position: dict[str, dict[str, int]],
                 others_of: dict[str, list[str]], inputs: PlanInputs, refused: list[dict], cfg: PairingConfig,
                 round_index: int, chunk_rows: int, seed: int, fingerprint: str,
                 skip_codes: frozenset[int] = frozenset()) -> Iterator[pa.Table]:
    keys, expr, desc, sha_bytes = inputs.key_rank, inputs.label, inputs.desc, inputs.sha

    def sha(row: int) -> str:
        return sha_bytes[row].decode()

    # one entry per planned candidate: (candidate_id, item_seed, identity, j, t, s, carrier, swap, mouth)
    plan: list[tuple[str, int, str, str, int, int, int, int, int]] = []
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
            if skip_codes and int(expr[t]) in skip_codes:
                refused.append(dict(item_id=inputs.key(t), stage="pairing", reason="expression_unjudgeable",
                                    detail="the run's QC self-test cannot certify this expression class "
                                           "(run.json selftest; qc.expression.judge_unjudgeable plans it anyway)",
                                    identity=identity, path=inputs.path(t)))
                continue
            s = most_different(t, [m for m in members if m != t], expr, keys, desc)
            t_sha = sha(t)
            pick = j_draw(t_sha, seed, round_index, n_others)
            j = others[pick] if same_person else pool[pick if pick < position else pick + 1]
            j_members = by_identity(j)
            carrier = closest(s, j_members, expr, keys, desc)
            swap = swap_source(t_sha, j_members, keys, seed, round_index)
            mouth = mouth_donor(t, j_members, expr, keys, desc)
            cid = candidate_id(fingerprint, round_index, seed, t_sha, sha(s), sha(carrier), sha(swap), sha(mouth))
            plan.append((cid, item_seed(seed, round_index, cid), identity, j, t, s, carrier, swap, mouth))
            if len(plan) >= chunk_rows:
                plan.sort(key=lambda p: p[0])
                yield _index_table(plan, round_index)
                plan = []
    if plan:
        plan.sort(key=lambda p: p[0])
        yield _index_table(plan, round_index)


def _index_table(plan: list[tuple], round_index: int) -> pa.Table:
    """PLAN_INDEX_SCHEMA rows of planned candidates."""
    columns = [list(c) for c in zip(*plan, strict=True)] if plan else [[] for _ in range(9)]
    cid, seeds, ident_i, ident_j, t, s, carrier, swap, mouth = columns
    values = [cid, [round_index] * len(plan), seeds, ident_i, ident_j, t, s, carrier, swap, mouth]
    return pa.Table.from_arrays([pa.array(v, f.type) for v, f in zip(values, PLAN_INDEX_SCHEMA, strict=True)],
                                schema=PLAN_INDEX_SCHEMA)
