"""pairing.same_person_similarity resolved per run (pipeline/planning/same_person.py): calibrated from the sources
by default, an explicit value overrides, `merge_same_person: false` merges nothing; the planner clusters with the
resolved value, on London's real dlib embeddings."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from manifests.schemas import SOURCES
from pipeline.config import load_config
from pipeline.planning.config import PairingConfig
from pipeline.planning.round_planner import plan_for
from pipeline.planning.same_person import resolve_from_sources, resolve_same_person

N_IDS = 30


def _sources(identities: list[str], embeddings: np.ndarray) -> pa.Table:
    """A sources table for the planner: one row per photo, photos of an identity in input order."""
    rows = []
    for k, (ident, emb) in enumerate(zip(identities, embeddings, strict=True)):
        sha = hashlib.sha256(f"{ident}/{k}".encode()).hexdigest()
        label = ("neutral", "smiling")[k % 2]
        rows.append(dict(source_id=sha[:16], input_key=f"{ident}/{k}.jpg", identity=ident, expression=label,
                         path=f"/c/{ident}/{k}.jpg", file_sha256=sha, width=64, height=64, face_box=[0.0] * 4,
                         aligned_path=f"/a/{sha[:16]}.png", aligned_sha256=sha, landmarks68=[0.0] * 136,
                         keypoints5=[0.0] * 10, embedding=np.asarray(emb, np.float32).tolist(),
                         embedding_model="dlib", embedding_model_sha256="0", detector_model="d",
                         detector_model_sha256="0", expression_descriptor=[float(k % 2)] * 18, sharpness=1.0,
                         run_id="r", config_fingerprint="f"))
    return pa.Table.from_pylist(rows, schema=SOURCES)


@pytest.fixture(scope="module")
def london(london_faces) -> tuple[list[str], np.ndarray]:
    names = sorted(london_faces)[:N_IDS]
    ids = [i for i in names for _ in ("neutral", "smiling")]
    return ids, np.stack([london_faces[i][e].embedding for i in names for e in ("neutral", "smiling")])


def test_the_planner_merges_a_real_alias_and_no_two_people(london):
    ids, emb = london
    alias = [*ids, "zz-alias", "zz-alias"]  # the first identity's photos again, re-encoded (tiny changes)
    table = _sources(alias, np.concatenate([emb, emb[:2] + 1e-4]))
    cfg = load_config(overrides=["pairing.split_closed=false"])
    resolved = resolve_from_sources(cfg.pairing, table)
    assert resolved.source == "calibrated" and resolved.value is not None
    clusters = plan_for(cfg, table, 0).clusters
    assert clusters is not None
    assert {c: n for c, n in clusters.size_of.items() if n > 1} == {ids[0]: 2}
    assert clusters.cluster_of["zz-alias"] == ids[0]
    plan = plan_for(cfg, table, 0).plan
    pairs = set(zip(plan["identity_i"].to_pylist(), plan["identity_j"].to_pylist(), strict=True))
    assert (ids[0], "zz-alias") not in pairs and ("zz-alias", ids[0]) not in pairs


def test_overlap_merges_nothing_and_the_record_says_so(london):
    ids, emb = london
    rng = np.random.default_rng(0)
    mixed = emb.copy()
    mixed[1::2] = np.roll(emb[0::2], -1, axis=0) + rng.normal(0, 0.02, emb[1::2].shape)  # a look-alike's photo
    table = _sources(ids, mixed)
    cfg = load_config(overrides=["pairing.split_closed=false"])
    resolved = resolve_from_sources(cfg.pairing, table)
    record = resolved.record()
    assert resolved.value is None and resolved.source == "overlap"
    assert record["merged"] is False and record["same_person_similarity"] is None
    assert "NOT merged" in record["note"] and record["calibration"]["separable"] is False
    clusters = plan_for(cfg, table, 0).clusters
    assert clusters is not None and set(clusters.size_of.values()) == {1}
    # without embeddings to learn from (all zero), nothing is merged either
    zero = resolve_from_sources(cfg.pairing, _sources(ids, np.zeros_like(emb)))
    assert zero.value is None and not zero.record()["merged"]


def test_an_explicit_value_or_off_overrides_the_calibration(london):
    ids, emb = london
    table = _sources(ids, emb)
    explicit = resolve_from_sources(PairingConfig(same_person_similarity=0.5), table)
    assert (explicit.value, explicit.source, explicit.calibration) == (0.5, "config", None)
    assert explicit.record()["merged"] is True
    off = resolve_same_person(PairingConfig(merge_same_person=False), ids, emb)
    assert (off.value, off.source) == (None, "off") and "merge_same_person is false" in off.record()["note"]
    cfg = load_config(overrides=["pairing.split_closed=false", "pairing.same_person_similarity=0.5"])
    clusters = plan_for(cfg, table, 0).clusters
    assert clusters is not None and max(clusters.size_of.values()) > 1  # 0.5 merges strangers: the user asked
    assert load_config(overrides=["pairing.merge_same_person=false"]).resolved_run_id() != \
        load_config().resolved_run_id()
