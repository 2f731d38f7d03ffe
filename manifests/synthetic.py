"""Synthetic runs with the real manifest schemas and real image files, for tests and benchmarks.

Images come from a small pool (given, or smooth random pictures) and are reused under new ids, so a run
of any size costs only its manifest rows: the way benchmarks grow a release without generating faces.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa

from core.location import Location
from manifests.artifacts import ArtifactStore
from manifests.runs import now_iso, write_run_info
from manifests.schemas import CANDIDATES, QC, REJECTS, SOURCES, TRIPLES
from manifests.store import ManifestStore, shard_key

THRESHOLDS = {"identity_backend": "synthetic", "max_expression_distance": 0.12, "max_leak_similarity": 0.9,
              "min_sharpness": 20.0, "min_swap_similarity": 0.9}
MODELS = {"expression_model": "synthetic_warp", "swap_model": "synthetic_swap", "identity_model": "synthetic_id"}


def smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random but compressible RGB picture (blurred blobs), uint8 HxWx3."""
    small = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    idx = np.linspace(0, 7, size)
    x0 = np.floor(idx).astype(int)
    x1 = np.minimum(x0 + 1, 7)
    w = (idx - x0)[:, None]
    rows = small[x0] * (1 - w[..., None]) + small[x1] * w[..., None]
    img = rows[:, x0] * (1 - w.T[..., None]) + rows[:, x1] * w.T[..., None]
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def _id(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:16]


def _decide(s: dict) -> list[str]:
    t = THRESHOLDS
    reasons = []
    if s["sharpness"] < t["min_sharpness"]:
        reasons.append("qc_blurry")
    if s["id_sim_rt"] > t["max_leak_similarity"]:
        reasons.append("identity_leak")
    if s["id_sim_rj"] < t["min_swap_similarity"]:
        reasons.append("swap_failed")
    if s["expr_dist_rt"] > t["max_expression_distance"]:
        reasons.append("expression_lost")
    return reasons


def write_synthetic_run(run_url: Location | str, *, identities: int = 6, images_per_identity: int = 2,
                        candidates_per_round: int = 24, rounds: int = 1, seed: int = 0,
                        pool: list[np.ndarray] | None = None, image_size: int = 64, score_shift: float = 0.0,
                        ingest_rejects: int = 1, commit_rows: int = 2000, all_accepted: bool = False) -> str:
    """Write run.json, sources/candidates/qc/triples/rejects and images; returns the run id.

    Candidate ids depend only on (round, index), so two synthetic runs share triple ids; `score_shift` is
    added to the recorded id_sim_rt after the accept decision (to test diffs); `all_accepted` draws every
    score inside the QC thresholds (benchmarks: N candidates give N triples)."""
    rng = np.random.default_rng(seed)
    run_id = f"synthetic-{seed}"
    art = ArtifactStore(run_url)
    store = ManifestStore.open(run_url)
    pool = pool or [smooth_image(rng, image_size) for _ in range(max(8, identities * images_per_identity))]
    names = [f"id{k:03d}" for k in range(identities)]
    sources, pool_refs = [], []
    for k, name in enumerate(names):
        for m in range(images_per_identity):
            sid = _id("src", name, m)
            url, sha = art.put("aligned", sid, pool[(k * images_per_identity + m) % len(pool)])
            emb = rng.normal(size=128).astype(np.float32)
            sources.append(dict(
                source_id=sid, input_key=f"{name}/{m}.png", identity=name, expression=("neutral", "smiling")[m % 2],
                path=f"/corpus/{name}/{m}.png", file_sha256=sha, width=image_size, height=image_size,
                face_box=[0, 0, image_size, image_size], aligned_path=url, aligned_sha256=sha, landmarks68=None,
                keypoints5=None, embedding=(emb / np.linalg.norm(emb)).tolist(), embedding_model="synthetic_id",
                embedding_model_sha256="0" * 64, detector_model="synthetic", detector_model_sha256="0" * 64,
                expression_descriptor=None, sharpness=100.0, run_id=run_id, config_fingerprint="synthetic"))
    for p, img in enumerate(pool):
        pool_refs.append(art.put("reference", f"pool-{p:04d}", img))
    tables: dict[str, list[dict]] = {"sources": sources, "candidates": [], "qc": [], "triples": [], "rejects": []}
    tables["rejects"] += [dict(item_id=f"bad/{k}.png", round=0, stage="ingest", reason="no_face", detail=None,
                               identity="bad", path=f"/corpus/bad/{k}.png", run_id=run_id)
                          for k in range(ingest_rejects)]
    by_ident = {n: [s for s in sources if s["identity"] == n] for n in names}
    thresholds = json.dumps(THRESHOLDS, sort_keys=True)

    def flush(force: bool = False) -> None:
        if not force and len(tables["qc"]) < commit_rows:
            return
        ids = [r["candidate_id"] for r in tables["qc"]] + [r["source_id"] for r in tables["sources"]]
        schemas = {"sources": SOURCES, "candidates": CANDIDATES, "qc": QC, "triples": TRIPLES, "rejects": REJECTS}
        store.commit(shard_key(ids or ["empty"]),
                     {k: pa.Table.from_pylist(v, schema=schemas[k]) for k, v in tables.items()})
        for v in tables.values():
            v.clear()

    for r in range(rounds):
        for c in range(candidates_per_round):
            cid = _id("cand", r, c)
            i = names[c % identities]
            j = names[(c + 1 + (c // identities) % (identities - 1)) % identities]
            s_src, t_src = by_ident[i][0], by_ident[i][1 % images_per_identity]
            j_src = by_ident[j][0]
            r_url, r_sha = pool_refs[(c * 7 + r) % len(pool_refs)]
            hi = (0.9, 0.9, 0.12, 20.0) if all_accepted else (0.97, 0.85, 0.16, 10.0)  # score ranges
            scores = dict(id_sim_rt=float(rng.uniform(0.3, hi[0])), id_sim_rj=float(rng.uniform(hi[1], 1.0)),
                          expr_dist_rt=float(rng.uniform(0.01, hi[2])), sharpness=float(rng.uniform(hi[3], 600)))
            reasons = _decide(scores)
            accepted = not reasons
            recorded = dict(scores, id_sim_rt=scores["id_sim_rt"] + score_shift)
            base = dict(round=r, run_id=run_id)
            tables["candidates"].append(dict(
                base, candidate_id=cid, identity_i=i, identity_j=j, expression=t_src["expression"],
                target_source_id=t_src["source_id"], s_source_id=s_src["source_id"],
                carrier_source_id=j_src["source_id"], swap_source_id=j_src["source_id"], seed=c,
                expression_backend="synthetic", expression_model=MODELS["expression_model"],
                expression_model_sha256="1" * 64, transfer_path=r_url, transfer_sha256=r_sha,
                swap_backend="synthetic", swap_model=MODELS["swap_model"], swap_model_sha256="2" * 64,
                reference_path=r_url, reference_sha256=r_sha, status="ok", reject_stage=None, reject_reason=None,
                reject_detail=None, config_fingerprint="synthetic"))
            tables["qc"].append(dict(
                base, candidate_id=cid, accepted=accepted, reason=reasons[0] if reasons else "accepted",
                reasons=reasons, face_found=True, **recorded, identity_backend="synthetic",
                identity_model=MODELS["identity_model"], identity_model_sha256="3" * 64, thresholds=thresholds))
            if accepted:
                tables["triples"].append(dict(
                    base, triple_id=cid, identity_i=i, identity_j=j, expression=t_src["expression"],
                    s_source_id=s_src["source_id"], s_path=s_src["aligned_path"], s_sha256=s_src["aligned_sha256"],
                    r_path=r_url, r_sha256=r_sha, t_source_id=t_src["source_id"], t_path=t_src["aligned_path"],
                    t_sha256=t_src["aligned_sha256"], s_embedding=s_src["embedding"], **recorded, seed=c,
                    expression_model=MODELS["expression_model"], expression_model_sha256="1" * 64,
                    swap_model=MODELS["swap_model"], swap_model_sha256="2" * 64,
                    identity_model=MODELS["identity_model"], identity_model_sha256="3" * 64,
                    thresholds=thresholds, config_fingerprint="synthetic"))
            flush()
    flush(force=True)
    write_run_info(run_url, dict(run_id=run_id, created_at=now_iso(), updated_at=now_iso(),
                                 config_fingerprint="synthetic", config={"corpus": {"root": "synthetic"}},
                                 invocations=[]))
    return run_id
