"""train_adapter through Ray Train on real London faces at 64 px: overfit and resume. Refined training (from
round r's triples) runs in tests/pipeline/test_rounds_eadapter.py, which checks the adapter's provenance."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from pipeline.config import TrainConfig
from pipeline.train_adapter import train_adapter
from stages.eadapter.checkpoints import latest_checkpoint
from stages.eadapter.model import EAdapter
from tests.eadapter.tiny_sd import demo_triples

pytestmark = pytest.mark.slow  # Ray Train


@pytest.fixture(scope="module")
def local_ray() -> None:
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def test_base_training_overfits_and_resumes(local_ray: None, tiny_sd: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "base")
    cfg = TrainConfig(steps=100, batch_size=2, learning_rate=3e-3, checkpoint_every=50, cpus_per_worker=1.0)
    result = train_adapter(demo_triples(4), "base", str(tiny_sd), None, out, cfg, storage_path=str(tmp_path / "ray"))
    assert result.steps == 100 and result.start_step == 0 and len(result.losses) == 100
    first, last = result.mean_loss(first=20), result.mean_loss(last=20)
    assert last < 0.85 * first, (first, last)
    adapter = EAdapter.from_pretrained(result.adapter_url)
    assert adapter.adapter_sha256 == result.adapter_sha256
    assert adapter.config.provenance["kind"] == "trained" and adapter.config.provenance["mode"] == "base"
    assert latest_checkpoint(out).endswith("step-00000100")

    resumed = train_adapter(demo_triples(4), "base", str(tiny_sd), None, out, cfg.model_copy(update={"steps": 105}),
                            storage_path=str(tmp_path / "ray"))
    assert resumed.start_step == 100 and resumed.steps == 105 and resumed.losses[:100] == result.losses
    assert resumed.adapter_sha256 != result.adapter_sha256



def test_bad_inputs_fail_early(local_ray: None, tiny_sd: Path, tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "s_embedding"} for r in demo_triples(2)]
    with pytest.raises(ValueError, match="s_embedding"):
        train_adapter(rows, "base", str(tiny_sd), None, str(tmp_path / "x"), TrainConfig(steps=1))
    with pytest.raises(ValueError, match="r_path"):
        train_adapter(demo_triples(2), "refined", str(tiny_sd), None, str(tmp_path / "y"), TrainConfig(steps=1))
