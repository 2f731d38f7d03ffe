"""Train the E-Adapter on {S, R, T} triples with Ray Train (TorchTrainer) reading through Ray Data.

The launch and the CLI live here; the rows and modes (stages/eadapter/training_data.py), the per-worker loop and
TrainResult (stages/eadapter/training.py) and the checkpoints (stages/eadapter/checkpoints.py) live beside the
model. Checkpoints go to <output>/checkpoints/ and a new call with the same output resumes from the latest one;
the final adapter is <output>/adapter, the loss history <output>/train_log.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.location import Location
from pipeline.config import TrainConfig, load_config
from stages.config import ExpressionTransferConfig
from stages.eadapter.training import TrainResult, Worker, read_train_log, train_on_worker
from stages.eadapter.training_data import Mode, decode_triples

log = logging.getLogger(__name__)


def _as_dataset(triples: Any, mode: Mode) -> Any:
    import ray.data

    ds = ray.data.from_items(list(triples)) if isinstance(triples, list) else triples
    need = {"s_path", "t_path", "s_embedding"} | ({"r_path"} if mode == "refined" else set())
    missing = need - set(ds.columns())
    if missing:
        raise ValueError(
            f"triples lack columns {sorted(missing)} needed in mode {mode!r} (see stages/eadapter/training_data.py)")
    return ds


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: stages.eadapter.training's loop with this worker's rank, device, shard and DDP."""
    import ray.train
    import ray.train.torch

    tc = TrainConfig.model_validate(config["train"])
    et = ExpressionTransferConfig.model_validate(config["expression_transfer"])
    worker = Worker(rank=ray.train.get_context().get_world_rank(), device=ray.train.torch.get_device(),
                    shard=ray.train.get_dataset_shard("train"),
                    prepare=lambda module: ray.train.torch.prepare_model(
                        module, parallel_strategy_kwargs={"find_unused_parameters": True}),
                    report=ray.train.report)
    train_on_worker(worker, tc, et, mode=config["mode"], base_model=config["base_model"],
                    init_adapter=config["init_adapter"], init_adapter_id=config["init_adapter_id"],
                    output=config["output"])


def train_adapter(triples: Any, mode: Mode, base_model: str, init_adapter: str | None, output: Location | str,
                  train_cfg: TrainConfig, *, expression_cfg: ExpressionTransferConfig | None = None,
                  storage_path: str | None = None, run_name: str | None = None) -> TrainResult:
    """Train (or resume training) an adapter with Ray Train; returns where it was written and the loss history.

    output: the folder for checkpoints and the adapter; a Location carries the storage options that reach it
    (the run's: also used for the triples' images and init_adapter), a plain path or URL has none.

    triples: ray.data.Dataset or list of row dicts (columns: stages/eadapter/training_data.py).
    expression_cfg: prompt, image encoder, cache dir and the architecture of a fresh adapter (init_adapter None).
    Ray is started locally when not already initialised.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if mode not in ("base", "refined"):
        raise ValueError(f"mode must be 'base' or 'refined', got {mode!r}")
    out = Location.of(output)
    et = expression_cfg or ExpressionTransferConfig(backend="eadapter", base_model=base_model)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    init_id = None
    if init_adapter:
        from stages.eadapter.model import EAdapter

        init_id = EAdapter.from_pretrained(out.at(init_adapter)).adapter_id  # fails early on a bad/tampered adapter
    ds = _as_dataset(triples, mode).map_batches(
        decode_triples, fn_kwargs={"mode": mode, "resolution": train_cfg.resolution, "files": out}, batch_size=16,
        num_cpus=min(1.0, train_cfg.cpus_per_worker))
    loop_config = {"train": train_cfg.model_dump(mode="json"), "expression_transfer": et.model_dump(mode="json"),
                   "mode": mode, "base_model": base_model, "init_adapter": init_adapter, "init_adapter_id": init_id,
                   "output": out}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config, datasets={"train": ds},
        scaling_config=ScalingConfig(num_workers=train_cfg.num_workers, use_gpu=train_cfg.use_gpu,
                                     resources_per_worker={"CPU": train_cfg.cpus_per_worker}),
        run_config=RunConfig(name=run_name or f"eadapter-{mode}",
                             storage_path=storage_path or str(Path(tempfile.gettempdir()) / "ciep_ray_train")))
    trainer.fit()
    return read_train_log(out)


def _read_triples(url: str) -> Any:
    import ray.data

    if url.endswith(".parquet") or not url.rsplit("/", 1)[-1].count("."):
        return ray.data.read_parquet(url)
    if url.endswith((".jsonl", ".json")):
        return ray.data.read_json(url)
    if url.endswith(".csv"):
        return ray.data.read_csv(url)
    raise ValueError(f"triples file {url}: expected .parquet, .jsonl or .csv")


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m pipeline.train_adapter --triples T.parquet --mode base --output URL [--config C.yaml]."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--triples", required=True, help="Parquet / JSONL / CSV of triple rows (fsspec URL)")
    ap.add_argument("--mode", choices=("base", "refined"), required=True)
    ap.add_argument("--output", required=True, help="fsspec URL for checkpoints and the trained adapter")
    ap.add_argument("--base-model", help="default: expression_transfer.base_model of the config")
    ap.add_argument("--init-adapter", help="adapter folder to start from (default: a fresh adapter)")
    ap.add_argument("--config", help="pipeline YAML config (train: and expression_transfer: sections are used)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE config override")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    base_model = args.base_model or cfg.expression_transfer.base_model
    if not base_model:
        ap.error("no base model: pass --base-model or set expression_transfer.base_model")
    result = train_adapter(_read_triples(args.triples), args.mode, base_model, args.init_adapter, args.output,
                           cfg.train, expression_cfg=cfg.expression_transfer)
    summary = {k: v for k, v in asdict(result).items() if k != "losses"}
    summary.update(first_loss=result.mean_loss(first=20), last_loss=result.mean_loss(last=20))
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
