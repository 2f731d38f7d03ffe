from pathlib import Path

import pytest

from core.config import ConfigError
from pipeline.config import DEFAULT_CONFIG_PATH, load_config


def test_demo_config_loads_and_has_stable_run_id():
    a, b = load_config(), load_config(DEFAULT_CONFIG_PATH)
    assert a == b
    assert a.resolved_run_id() == b.resolved_run_id()
    assert a.resolved_run_id().startswith("demo-")


def test_unknown_key_is_named(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("qc:\n  identity:\n    max_leek_similarity: 0.5\n")
    with pytest.raises(ConfigError, match=r"qc\.identity\.max_leek_similarity"):
        load_config(p)


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"ingest\.crop_size"):
        load_config(overrides=["ingest.crop_size=8"])
    with pytest.raises(ConfigError, match=r"release\.splits"):
        load_config(overrides=["release.splits={train: 0.5}"])


def test_backend_requirements_are_checked():
    with pytest.raises(ConfigError, match="base_model is required"):
        load_config(overrides=["expression_transfer.backend=eadapter"])
    with pytest.raises(ConfigError, match=r"expression_transfer\.backend"):
        load_config(overrides=["expression_transfer.backend=magic"])


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_resources_do_not_change_the_run_id():
    base = load_config()
    other = load_config(overrides=["qc.resources.batch_size=16", "run.commit_rows=3", "ray.reserve_cpus=1"])
    assert base.resolved_run_id() == other.resolved_run_id()
    assert load_config(overrides=["run.seed=7"]).resolved_run_id() != base.resolved_run_id()


def test_run_id_is_unchanged_by_the_split_of_config_sections(monkeypatch):
    """Run ids recorded before the config sections moved next to their stages (issue 9) still resolve the same.

    Two later changes moved every run id once, on purpose: issue 11 added `pairing.same_person_similarity` (a
    data-defining field) and issue 12 took run.name out of the data fingerprint (triple ids do not depend on the
    run's name). With name put back, the ids computed on branch i11 (pre-split layout) are reproduced. Issue 19
    moved them once more: identity_swap.keep_regions / keep_feather define the data (the swap keeps the transfer's
    eyes and brows), and same_person_similarity's default became calibrated (null), so these ids are the i11
    layout's with the two swap fields added and same_person_similarity at its old explicit 0.96. Then
    expression_transfer.painted_mouths (data-defining: whether the CPU transfer paints a mouth or refuses the
    candidate) moved them again: demo-2622a9f06c, demo-ca6f426e35, demo-5b0d87c2be and demo-51eeb50f5c before it."""
    import pipeline.config
    from pipeline.config import load_config

    old_default = ["pairing.same_person_similarity=0.96"]
    assert load_config(overrides=old_default).resolved_run_id() == "demo-e08430130a"
    with monkeypatch.context() as m:
        m.setattr(pipeline.config, "_RUN_KEYS_NOT_IN_FINGERPRINT",
                  pipeline.config._RUN_KEYS_NOT_IN_FINGERPRINT - {"name"})
        assert load_config(overrides=old_default).resolved_run_id() == "demo-b2fd65b605"
    overrides = [*old_default, "qc.identity.backend=arcface", "qc.identity.model=arcface_w600k_r50",
                 "ingest.crop_size=128", "identity_swap.mask_regions=[skin,nose]",
                 "corpus.storage_options={endpoint_url: http://x, key: K}",
                 "release.splits={train: 0.5, test: 0.5}", "expression_transfer.prompt=hi",
                 "pairing.split_closed=false", "models.hash_overrides={a: b}"]
    assert load_config(overrides=overrides).resolved_run_id() == "demo-ffc050727c"
    with monkeypatch.context() as m:
        m.setattr(pipeline.config, "_RUN_KEYS_NOT_IN_FINGERPRINT",
                  pipeline.config._RUN_KEYS_NOT_IN_FINGERPRINT - {"name"})
        assert load_config(overrides=overrides).resolved_run_id() == "demo-1b16854249"
