"""QC thresholds are not part of the data fingerprint; the identity model is; run ids did not move."""

from __future__ import annotations

from pipeline.config import load_config


def test_qc_thresholds_do_not_change_the_run_id():
    base = load_config().resolved_run_id()
    for key in ("qc.expression.max_distance=0.2", "qc.identity.max_leak_similarity=0.8",
                "qc.identity.min_swap_similarity=0.9", "qc.quality.min_sharpness=5",
                "qc.expression.max_prob_distance=0.3", "qc.mouth.max_seam=9", "qc.identity.min_margin=0.1"):
        assert load_config(overrides=[key]).resolved_run_id() == base, key


def test_identity_model_and_data_keys_still_change_it():
    base = load_config().resolved_run_id()
    assert load_config(overrides=["qc.identity.backend=arcface", "qc.identity.model=arcface_w600k_r50"]
                       ).resolved_run_id() != base
    assert load_config(overrides=["run.seed=7"]).resolved_run_id() != base


def test_demo_run_id_is_the_one_before_thresholds_left_the_fingerprint(monkeypatch):
    """Taking the thresholds out kept ids: with issue 12's change (run.name out of the fingerprint) undone, the
    demo id is the one computed on branch i11, where thresholds were still fingerprinted (issue 11's
    pairing.same_person_similarity had moved it once from a677ed0's demo-3987055749; issue 19 made its default
    calibrated, which moved the default id once more: the explicit 0.96 of before gives the old id; and the swap's
    keep_regions / keep_feather, data-defining, moved it from demo-7569febb66; expression_transfer.painted_mouths,
    data-defining, from demo-ca6f426e35)."""
    import pipeline.config

    monkeypatch.setattr(pipeline.config, "_RUN_KEYS_NOT_IN_FINGERPRINT",
                        pipeline.config._RUN_KEYS_NOT_IN_FINGERPRINT - {"name"})
    assert load_config(overrides=["pairing.same_person_similarity=0.96"]).resolved_run_id() == "demo-b2fd65b605"
    assert load_config().resolved_run_id() != "demo-b2fd65b605"
