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


def test_the_threshold_from_the_compact_inputs_equals_the_one_from_the_sources(london, monkeypatch):
    """resolve_from_inputs (the run's path: the planner's compact inputs, embeddings fetched for the sampled rows
    only) gives resolve_from_sources' value and calibration: one file in two folders left out, identities sampled
    when there are more than MAX_IDENTITIES, rows in (identity, input_key) order whatever the committed order."""
    from pipeline.planning import same_person
    from pipeline.planning.clusters import embedding_matrix
    from pipeline.planning.inputs import PLANNER_COLUMNS, PlanInputs

    ids, emb = london
    alias = [*ids, "zz-alias", "zz-alias"]
    table = _sources(alias, np.concatenate([emb, emb[:2] + 1e-4]))
    copy = table.slice(5, 1).set_column(table.schema.get_field_index("identity"), "identity", pa.array(["aa-copy"]))
    table = pa.concat_tables([table, copy.cast(table.schema)])
    table = table.take(np.random.default_rng(1).permutation(table.num_rows))
    fetched: list[int] = []

    def embeddings(rows: np.ndarray) -> np.ndarray:
        fetched.extend(rows.tolist())
        return embedding_matrix(table.column("embedding").take(pa.array(rows)))

    inputs = PlanInputs.from_batches([table.select(PLANNER_COLUMNS)])
    pairing = PairingConfig()
    assert same_person.repeated_files(inputs.sha).sum() == 2  # the copy and its original
    for limit in (1000, 12):  # every identity, then a sample of 12 (of 31)
        monkeypatch.setattr(same_person, "MAX_IDENTITIES", limit)
        fetched.clear()
        expected = resolve_from_sources(pairing, table)
        got = same_person.resolve_from_inputs(pairing, inputs, embeddings)
        assert got.record() == expected.record() and got.value is not None
        assert len(fetched) == (table.num_rows - 2 if limit == 1000 else 24)  # only the sampled identities' rows


def test_the_threshold_read_file_by_file_equals_the_one_from_the_whole_table(london, monkeypatch, tmp_path):
    """resolve_from_store reads the committed sources a file at a time (identities and digest keys, then the
    sampled identities' rows) and gives what resolve_from_sources gives over the whole table."""
    from manifests.store import ManifestStore
    from pipeline.planning import same_person

    ids, emb = london
    table = _sources([*ids, "zz-alias", "zz-alias"], np.concatenate([emb, emb[:2] + 1e-4]))
    copy = table.slice(7, 1).set_column(table.schema.get_field_index("identity"), "identity", pa.array(["aa-copy"]))
    table = pa.concat_tables([table, copy.cast(table.schema)])
    table = table.take(np.random.default_rng(2).permutation(table.num_rows))
    store = ManifestStore.open(str(tmp_path / "run"))
    for k, (a, b) in enumerate([(0, 20), (20, 20), (20, 45), (45, table.num_rows)]):  # one file empty
        store.commit(f"ingest-{k}", {"sources": table.slice(a, b - a)})
    for limit in (1000, 12):
        monkeypatch.setattr(same_person, "MAX_IDENTITIES", limit)
        expected = resolve_from_sources(PairingConfig(), table)
        assert same_person.resolve_from_store(PairingConfig(), store).record() == expected.record()
        assert expected.value is not None


def test_the_threshold_calibrated_with_the_embedding_blocks_equals_the_one_from_the_sources(london, monkeypatch,
                                                                                           tmp_path, ray_session):
    """A run's path (ray_planner.RemotePlanInputs): the calibration's sample rows are taken by the embedding blocks'
    own tasks, blocks of several files, one empty; the same value and record as over the whole table."""
    from manifests.store import ManifestStore
    from pipeline.planning import ray_features
    from pipeline.planning.ray_planner import RemotePlanInputs

    ids, emb = london
    table = _sources([*ids, "zz-alias", "zz-alias"], np.concatenate([emb, emb[:2] + 1e-4]))
    table = table.take(np.random.default_rng(3).permutation(table.num_rows))
    store = ManifestStore.open(str(tmp_path / "run"))
    for k, (a, b) in enumerate([(0, 20), (20, 20), (20, 45), (45, table.num_rows)]):
        store.commit(f"ingest-{k}", {"sources": table.slice(a, b - a)})
    monkeypatch.setattr(ray_features, "FEATURE_BLOCK_ROWS", 30)  # blocks 0-45, 45-62
    expected = resolve_from_sources(PairingConfig(), table)
    remote = RemotePlanInputs(store, PairingConfig())
    assert len(remote.features.blocks.embeddings) == 2 and remote.threshold is not None
    assert remote.same_person(PairingConfig()).record() == expected.record() and expected.value is not None
    assert RemotePlanInputs(store).same_person(PairingConfig()).record() == expected.record()  # fetched by block
