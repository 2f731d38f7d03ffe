"""pipeline.planning's plan_round was rewritten for CIEP100k scale (index-based, vectorised distances, list columns
gathered in Arrow). This keeps the previous row-dict implementation verbatim as the reference and checks that
both give the same plan and the same refusals, in the same order, on corpora with every pairing case.
The reference draws j from every other identity, so the fast one runs with pairing.split_closed=false here."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from manifests.schemas import PLAN_SCHEMA, PLAN_SOURCE_COLUMNS, SOURCES
from pipeline.config import load_config
from pipeline.planning.inputs import PLANNER_COLUMNS, PlanInputs
from pipeline.planning.round_planner import plan_for
from pipeline.planning.stream import planned_size_bound
from stages.face.expression import expression_distance
from stages.face.mouth import ASPECT_INDEX, OPEN_ASPECT


def _h(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


# ---- the previous implementation (commit 91cbe66, stages/pairing.py), unchanged but for its name, its return and
# ---- the swap-source rule of issue 10 (a hash of seed, round and T's content among j's photos, not T's expression)

def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _drop_duplicates(rows: list[dict], refused: list[dict]) -> list[dict]:
    """The same file content twice: keep one copy (issue 11 rule: across identities, the copy whose identity's
    other images it resembles most, ties to the first path), reject the others."""
    by_sha: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_sha[r["file_sha256"]].append(r)
    kept = []
    for sha, group in by_sha.items():
        group.sort(key=lambda r: r["input_key"])
        keep = group[0]
        if len({r["identity"] for r in group}) > 1:
            def score(r: dict, sha: str = sha) -> float:
                others = [o for o in rows if o["identity"] == r["identity"] and o["file_sha256"] != sha]
                return max(_cos(o["embedding"], r["embedding"]) for o in others) if others else float("-inf")
            best = max(score(r) for r in group)
            keep = next(r for r in group if score(r) == best)
        kept.append(keep)
        for r in group:
            if r is keep:
                continue
            where = f" under identity {keep['identity']!r}, which it resembles most" \
                if r["identity"] != keep["identity"] else ""
            refused.append(dict(item_id=r["input_key"], stage="pairing", reason="duplicate_image",
                                detail=f"same file content as {keep['input_key']} (kept{where})",
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


def reference_plan_round(sources, cfg, round_index):
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
            swap_pool = sorted(by_identity[j], key=lambda r: r["input_key"])
            swap = swap_pool[int(_h(seed, round_index, t["file_sha256"], "swap")[:12], 16) % len(swap_pool)]
            t_open = t["expression_descriptor"][ASPECT_INDEX] > OPEN_ASPECT
            mouth = _closest(t, [m for m in by_identity[j] if (m["expression_descriptor"][ASPECT_INDEX] > OPEN_ASPECT)
                                 == t_open] or by_identity[j])
            cid = _h(fingerprint, round_index, seed, t["file_sha256"], s["file_sha256"], carrier["file_sha256"],
                     swap["file_sha256"], mouth["file_sha256"])[:16]
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
                t_descriptor=t["expression_descriptor"], mouth_source_id=mouth["source_id"],
                mouth_aligned_path=mouth["aligned_path"], mouth_landmarks68=mouth["landmarks68"], status="ok",
            ))
    plan.sort(key=lambda r: r["candidate_id"])
    return plan, refused


# -----------------------------------------------------------------------------------------------------------------

def synthetic_sources(n_ids: int, seed: int) -> pa.Table:
    """Identities with 1..6 images, labels missing or empty, duplicates within and across identities, and exact
    descriptor ties."""
    rng = np.random.default_rng(seed)
    rows = []
    labels = ["neutral", "smiling", "surprised", None, ""]
    for i in range(n_ids):
        for k in range(int(rng.integers(1, 7))):
            rows.append(dict(identity=f"id{i:04d}", key=f"id{i:04d}/{k}.jpg", sha=f"{i:08x}{k:04x}" + "0" * 52,
                             desc=(rng.standard_normal(18) * 0.1).astype(np.float32),
                             expr=labels[int(rng.integers(0, len(labels)))]))
    if rows:
        for r in rng.choice(len(rows), size=max(1, len(rows) // 20), replace=False):  # duplicates
            src = rows[int(r)]
            other = rows[int(rng.integers(0, len(rows)))]
            rows.append(dict(src, key=f"{other['identity']}/dup{r}.jpg", identity=other["identity"]))
            rows.append(dict(src, key=f"{src['identity']}/same{r}.jpg"))
        for r in rng.choice(len(rows), size=max(1, len(rows) // 10), replace=False):  # exact descriptor ties
            rows[int(r)]["desc"] = rows[int(rng.integers(0, len(rows)))]["desc"].copy()
        rows = [rows[int(o)] for o in rng.permutation(len(rows))]
    n = len(rows)

    def f32(w: int) -> list:
        return [rng.standard_normal(w).astype(np.float32).tolist() for _ in range(n)]

    cols = dict(
        source_id=[r["sha"][:16] + r["key"][-6:] for r in rows], input_key=[r["key"] for r in rows],
        identity=[r["identity"] for r in rows], expression=[r["expr"] for r in rows],
        path=[f"/c/{r['key']}" for r in rows], file_sha256=[r["sha"] for r in rows], width=[64] * n,
        height=[64] * n, face_box=f32(4), aligned_path=[f"/a/{r['key']}.png" for r in rows],
        aligned_sha256=[_h(r["key"]) for r in rows], landmarks68=f32(136), keypoints5=f32(10),
        embedding=f32(128), embedding_model=["m"] * n, embedding_model_sha256=["0"] * n, detector_model=["d"] * n,
        detector_model_sha256=["0"] * n, expression_descriptor=[r["desc"].tolist() for r in rows],
        sharpness=[1.0] * n, run_id=["r"] * n, config_fingerprint=["f"] * n)
    return pa.table({f.name: pa.array(cols.get(f.name, [None] * n), f.type) for f in SOURCES}, schema=SOURCES)


@pytest.mark.parametrize("n_ids,seed,extra", [(300, 0, []), (120, 1, ["pairing.max_targets_per_identity=2"]),
                                              (1, 2, []), (0, 3, []), (40, 4, ["run.seed=9"])])
def test_fast_plan_round_equals_the_reference(n_ids, seed, extra):
    sources = synthetic_sources(n_ids, seed)
    cfg = load_config(overrides=["pairing.split_closed=false", *extra])
    for round_index in (0, 1):
        fast = plan_for(cfg, sources, round_index)
        ref_rows, ref_refused = reference_plan_round(sources, cfg, round_index)
        assert fast.plan.schema == PLAN_SCHEMA
        assert fast.plan.equals(pa.Table.from_pylist(ref_rows, schema=PLAN_SCHEMA))
        assert fast.refused == ref_refused
    if n_ids > 10:
        assert fast.plan.num_rows > 0
        assert {r["reason"] for r in fast.refused} >= {"duplicate_image", "single_image_identity"}


def test_fast_plan_round_equals_the_reference_on_parquet_read_sources(tmp_path):
    """Through the manifest store, as run_generation reads them (several shards, Parquet list types)."""
    from manifests.store import ManifestStore
    sources = synthetic_sources(80, 5)
    store = ManifestStore.open(str(tmp_path / "run"))
    for i in range(0, sources.num_rows, 50):
        store.commit(f"s{i:05d}", {"sources": sources.slice(i, 50)})
    read = store.read_table("sources")
    cfg = load_config(overrides=["pairing.split_closed=false"])
    fast = plan_for(cfg, read, 0)
    ref_rows, ref_refused = reference_plan_round(read, cfg, 0)
    assert fast.plan.equals(pa.Table.from_pylist(ref_rows, schema=PLAN_SCHEMA)) and fast.refused == ref_refused


@pytest.mark.parametrize("n_ids,seed,extra", [(300, 0, []), (120, 1, ["pairing.max_targets_per_identity=2"]),
                                              (1, 2, []), (0, 3, []), (2, 6, [])])
def test_size_bound_is_at_least_the_plan_and_exact_without_duplicates(n_ids, seed, extra):
    """run_generation names the plan files before duplicates and clusters are known, from planned_size_bound."""
    cfg = load_config(overrides=[*extra])
    sources = synthetic_sources(n_ids, seed)
    first = np.unique(np.asarray(sources["file_sha256"].to_pylist(), dtype=object), return_index=True)[1]
    unique = sources.take(pa.array(np.sort(first)))  # one copy of each file: nothing for duplicates to drop
    for table, exact in ((sources, False), (unique, True)):
        size = plan_for(cfg, table, 0).plan.num_rows
        bound = planned_size_bound(PlanInputs.from_batches([table.select(PLANNER_COLUMNS)]), cfg.pairing)
        assert bound == size if exact else bound >= size
