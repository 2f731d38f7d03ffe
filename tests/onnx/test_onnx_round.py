"""A full round with the ONNX backends swapped in (inswapper-shaped swapper, ArcFace-shaped QC embedder),
through Ray, on stand-in models with the real names, shapes and initializers. The stand-ins are untrained,
so QC outcomes are arbitrary: what is checked is that every stage ran the ONNX models and said so."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.hashing import sha256_file
from manifests.query import connect
from manifests.store import ManifestStore
from pipeline.config import config_from_dict, load_config
from pipeline.run_idi import run_idi
from tests.conftest import london_identities, make_corpus
from tests.models.onnx_stand_ins import stand_in_config, write_stand_ins

pytestmark = pytest.mark.slow


def test_round_with_onnx_swapper_and_arcface_qc(tmp_path: Path, ray_session):
    corpus = make_corpus(tmp_path / "corpus", london_identities()[:3])
    models = write_stand_ins(tmp_path / "models", ("inswapper_128", "arcface_w600k_r50"))
    base = load_config(overrides=[f"corpus.root={corpus}", f"run.output_root={tmp_path / 'runs'}",
                                  "run.name=onnx", "qc.expression.calibrate=false"]).model_dump(mode="json")
    base["models"] = stand_in_config(tmp_path / "models", models)
    base["identity_swap"].update(backend="onnx", model="inswapper_128")
    base["qc"]["identity"].update(backend="arcface", model="arcface_w600k_r50",
                                  max_leak_similarity=1.0, min_swap_similarity=-1.0)
    cfg = config_from_dict(base)
    result = run_idi(cfg)
    con = connect(ManifestStore.open(result["timing"]["run_url"]))
    assert con.execute("select count(*) from qc").fetchone()[0] == 6
    swap = con.execute("select distinct swap_model, swap_model_sha256 from candidates where status = 'ok'").fetchall()
    assert swap == [("inswapper_128", sha256_file(models["inswapper_128"]))]
    ident = con.execute("select distinct identity_model, identity_model_sha256 from qc where face_found").fetchall()
    assert len(ident) == 1 and ident[0][1] == sha256_file(models["arcface_w600k_r50"])
    # Sources were embedded with the same ArcFace-shaped model, 512-d.
    assert con.execute("select distinct len(embedding), embedding_model from sources").fetchall() == \
        [(512, ident[0][0])]
