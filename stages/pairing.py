"""Plan a round: targets T, their S, and a swap-source identity j != i, all deterministic from the seed.

Runs on the driver over the `sources` table (small columns only). A target's candidate id is a hash of
the content hashes of every image it uses, the round, the seed and the data-defining config, so a rerun
plans exactly the same rows.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.config import PipelineConfig
from stages.face.expression import expression_distance

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


def _h(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


def _drop_duplicates(rows: list[dict], refused: list[dict]) -> list[dict]:
    """The same file content twice: keep it once within an identity, drop it under several identities."""
    by_sha: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_sha[r["file_sha256"]].append(r)
    kept = []
    for sha, group in by_sha.items():
        group.sort(key=lambda r: r["input_key"])
        identities = {r["identity"] for r in group}
        if len(identities) > 1:
            for r in group:
                refused.append(dict(item_id=r["input_key"], stage="pairing", reason="duplicate_image",
                                    detail=f"same file content under identities {sorted(identities)}",
                                    identity=r["identity"], path=r["path"]))
            continue
        kept.append(group[0])
        for r in group[1:]:
            refused.append(dict(item_id=r["input_key"], stage="pairing", reason="duplicate_image",
                                detail=f"same file content as {group[0]['input_key']}",
                                identity=r["identity"], path=r["path"]))
    return sorted(kept, key=lambda r: r["input_key"])


def _most_different(t: dict, others: list[dict]) -> dict:
    """S for T: another expression by label when labels differ, else the most different descriptor."""
    labelled = [o for o in others if t["expression"] and o["expression"] and o["expression"] != t["expression"]]
    pool = labelled or others
    return max(pool, key=lambda o: (expression_distance(t["expression_descriptor"], o["expression_descriptor"]),
                                    o["input_key"]))


def _closest(ref: dict, candidates: list[dict]) -> dict:
    """j's image whose expression matches ref's label, else whose descriptor is nearest."""
    same = [c for c in candidates if ref["expression"] and c["expression"] == ref["expression"]]
    pool = same or candidates
    return min(pool, key=lambda c: (expression_distance(ref["expression_descriptor"], c["expression_descriptor"]),
                                    c["input_key"]))


def plan_round(sources: pa.Table, cfg: PipelineConfig, round_index: int) -> RoundPlan:
    refused: list[dict] = []
    rows = _drop_duplicates(sources.select(PLAN_SOURCE_COLUMNS).to_pylist(), refused)
    by_identity: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_identity[r["identity"]].append(r)
    identities = sorted(by_identity)
    fingerprint = cfg.data_fingerprint()
    seed = cfg.run.seed
    plan = []
    for identity in identities:
        members = by_identity[identity]
        if len(members) < 2:
            r = members[0]
            refused.append(dict(item_id=r["input_key"], stage="pairing", reason="single_image_identity",
                                detail="identity has one usable image: no S for it (still used as a swap source)",
                                identity=identity, path=r["path"]))
            continue
        others_ids = [x for x in identities if x != identity]
        if not others_ids:
            for r in members:
                refused.append(dict(item_id=r["input_key"], stage="pairing", reason="no_other_identity",
                                    detail="the corpus has a single identity", identity=identity, path=r["path"]))
            continue
        targets = members[: cfg.pairing.max_targets_per_identity] if cfg.pairing.max_targets_per_identity else members
        for t in targets:
            s = _most_different(t, [m for m in members if m is not t])
            pick = int(_h(seed, round_index, t["file_sha256"], "j")[:12], 16)
            j = others_ids[pick % len(others_ids)]
            carrier = _closest(s, by_identity[j])
            swap = _closest(t, by_identity[j])
            cid = _h(fingerprint, round_index, seed, t["file_sha256"], s["file_sha256"], carrier["file_sha256"],
                     swap["file_sha256"])[:16]
            item_seed = int(_h(seed, round_index, cid)[:8], 16) & 0x7FFFFFFF
            plan.append(dict(
                candidate_id=cid, round=round_index, seed=item_seed, identity_i=identity, identity_j=j,
                expression=t["expression"], target_source_id=t["source_id"], s_source_id=s["source_id"],
                carrier_source_id=carrier["source_id"], swap_source_id=swap["source_id"],
                t_aligned_path=t["aligned_path"], t_aligned_sha256=t["aligned_sha256"],
                s_aligned_path=s["aligned_path"], s_aligned_sha256=s["aligned_sha256"],
                carrier_aligned_path=carrier["aligned_path"], swap_aligned_path=swap["aligned_path"],
                t_landmarks68=t["landmarks68"], s_landmarks68=s["landmarks68"],
                carrier_landmarks68=carrier["landmarks68"], swap_landmarks68=swap["landmarks68"],
                t_embedding=t["embedding"], s_embedding=s["embedding"], j_embedding=swap["embedding"],
                t_descriptor=t["expression_descriptor"], status="ok",
            ))
    plan.sort(key=lambda r: r["candidate_id"])
    return RoundPlan(pa.Table.from_pylist(plan, schema=PLAN_SCHEMA), refused)


def landmarks_array(flat: list[float]) -> np.ndarray:
    return np.asarray(flat, dtype=np.float32).reshape(-1, 2)
