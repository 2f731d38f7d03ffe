"""Two IDI rounds with the eadapter backend through Ray: round 1 generates with the adapter trained on
round 0's accepted triples, and lineage rows say so; a rerun of the finished run retrains nothing. The base
model is a tiny random SD-shaped folder built here and loaded through the same path a real SD1.5 folder takes.
Its random images are not faces, so round 0 bootstraps with landmark_warp (expression_transfer.bootstrap_backend)
to have accepted triples to train on, and round 1's swap goes onto T's landmarks
(identity_swap.target_landmarks_fallback)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from manifests.query import connect
from manifests.store import ManifestStore
from pipeline.config import load_config
from pipeline.rounds import adapter_url
from pipeline.run_idi import run_idi
from stages.eadapter.model import EAdapter
from tests.conftest import london_identities, make_corpus
from tests.models.tiny_eadapter import build_tiny_sd

pytestmark = pytest.mark.slow


def _files(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_rounds_train_and_record_lineage(tmp_path: Path, ray_session):
    corpus = make_corpus(tmp_path / "corpus", london_identities()[:6])
    base = build_tiny_sd(tmp_path / "tiny_sd")
    cfg = load_config(overrides=[
        f"corpus.root={corpus}", f"run.output_root={tmp_path / 'runs'}", "run.name=rounds", "run.rounds=2",
        "qc.expression.calibrate=false",
        "expression_transfer.backend=eadapter", f"expression_transfer.base_model={base}",
        "expression_transfer.bootstrap_backend=landmark_warp",
        "expression_transfer.num_inference_steps=2", "expression_transfer.guidance_scale=1.0",
        "identity_swap.target_landmarks_fallback=true",
        "train.steps=4", "train.batch_size=2", "train.checkpoint_every=2", "train.resolution=32",
    ])
    result = run_idi(cfg)
    url = result["timing"]["run_url"]
    con = connect(ManifestStore.open(url))
    assert [r["round"] for r in result["summary"]["rounds"]] == [0, 1]
    assert con.execute("select count(*) from qc where round = 0").fetchone()[0] == 12
    assert con.execute("select count(*) from triples where round = 0").fetchone()[0] > 0
    gen = con.execute("select round, adapter_id, adapter_sha256, adapter_path from lineage "
                      "where kind = 'generated_with' order by round").fetchall()
    trained = con.execute("select round, adapter_id, adapter_sha256, adapter_path, data_round, triples "
                          "from lineage where kind = 'trained_on'").fetchall()
    assert [g[0] for g in gen] == [0, 1]
    assert len(trained) == 1
    t_round, t_id, t_sha, t_path, data_round, n = trained[0]
    assert (t_round, data_round) == (1, 0) and t_path.startswith(adapter_url(url, 1))
    prov = EAdapter.from_pretrained(t_path).config.provenance
    assert prov["kind"] == "trained" and prov["mode"] == "refined"
    assert n == con.execute("select count(*) from triples where round = 0").fetchone()[0]
    # Round 1's data was made with exactly the adapter trained on round 0; round 0's by the bootstrap backend.
    assert gen[1][3] == t_path and gen[0][3] is None
    assert gen[1][1] == f"eadapter:{t_id}" and gen[0][1] == "landmark_warp_v4"
    assert con.execute("select count(*) from candidates where round = 1 and transfer_sha256 is not null"
                       ).fetchone()[0] == 12
    # (a round-0 candidate refused as no_mouth_donor was not generated: it has no model)
    models = con.execute("select distinct round, expression_model from candidates where expression_model is not null "
                         "order by 1").fetchall()
    assert models == [(0, gen[0][1]), (1, gen[1][1])]
    # Each candidate records its seed, and each generated one the expression model hash.
    assert con.execute("select count(*) from candidates where seed is null or (transfer_path is not null and "
                       "expression_model_sha256 is null)").fetchone()[0] == 0
    # Issue 11, case 10: rerunning the finished run does nothing: no retraining, no new weights or checkpoints,
    # the trained_on lineage row unchanged, no temp file left.
    adapter_dir = Path(adapter_url(url, 1))
    before = _files(adapter_dir)
    assert any(k.startswith("adapter/") for k in before) and any(k.startswith("checkpoints/") for k in before)
    again = run_idi(cfg)
    assert again["timing"]["items"] == 0
    assert _files(adapter_dir) == before, "the adapter, its checkpoints and log are untouched"
    assert connect(ManifestStore.open(url)).execute(
        "select round, adapter_id, adapter_sha256, adapter_path, data_round, triples from lineage "
        "where kind = 'trained_on'").fetchall() == trained
    assert not list(adapter_dir.rglob("*.tmp-*"))
