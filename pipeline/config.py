"""The run configuration, loaded from YAML: composes each package's own section. Unknown keys and bad values are
errors that name the key.

The stages' sections live at the bottom of stages/ (stages/config.py), QC's and publishing's next to their code; this
module only adds the run's own sections (run, ray, train) and puts them together. Same YAML shape, same
fingerprint, same run id.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from core.config import (
    ConfigError,
    StorageOptions,
    Strict,
    redact_secrets,
    storage_options_field,
    without_secrets,
)
from core.faults import FaultInjectionConfig
from core.location import Location
from pipeline.planning.config import PairingConfig, pairing_fingerprint
from publish.release.schema import ReleaseConfig
from qc.config import QCConfig
from stages.config import CorpusConfig, ExpressionTransferConfig, IdentitySwapConfig, IngestConfig, ModelsConfig

__all__ = ["DEFAULT_CONFIG_PATH", "PipelineConfig", "RayConfig", "RunConfig", "TrainConfig", "config_from_dict",
           "load_config", "parse_overrides"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "demo.yaml"


class RunConfig(Strict):
    name: str = "demo"
    output_root: str = "runs"  # fsspec URL or local path, relative paths are relative to the cwd
    # fsspec options for output_root (run folder, manifests, images); see StorageOptions.
    storage_options: StorageOptions = storage_options_field()
    run_id: str | None = None  # default: <name>-<hash of the data-defining config>
    seed: int = 1234
    rounds: int = Field(1, ge=1)
    # A model that fails on more than this share of items (and at least min_items_for_abort) stops the job.
    max_stage_error_rate: float = Field(0.5, ge=0, le=1)
    min_items_for_abort: int = Field(8, ge=1)
    # An item that failed with a transient error (stages/errors.py) is retried by the next rerun, up to this
    # many attempts in all; the last failure is then recorded as a stage_error reject (attempt = max_attempts).
    max_attempts: int = Field(3, ge=1)
    # A manifest shard is committed every commit_rows rows or commit_seconds, whichever comes first.
    commit_rows: int = Field(256, ge=1)
    commit_seconds: float = Field(30.0, gt=0)
    # Rows per round-plan Parquet file, which Ray Data reads as one block (pipeline/planning/files.py).
    plan_block_rows: int = Field(256, ge=1)
    fault_injection: FaultInjectionConfig | None = None  # testing hook, see FaultInjectionConfig

    @property
    def location(self) -> Location:
        """output_root with storage_options: run folders, manifests, images, releases and reports under it."""
        return Location(self.output_root, dict(self.storage_options))


class RayConfig(Strict):
    address: str | None = None  # None: start or join a local Ray; "auto" inside `ray job submit`
    num_cpus: int | None = None  # only when starting a local Ray
    # CPUs kept free for Ray Data's read and write tasks when sizing actor pools.
    reserve_cpus: float = Field(0.5, ge=0)
    # A stage actor that dies (crash, OOM kill, lost node) fails the phase's dataset; the phase is then started
    # again from the committed manifests (fresh actors) up to this many times (pipeline/phases.py
    # with_phase_retries). The dead actor's batch runs one item at a time first (pipeline/isolate.py): a restart
    # after an item killed its worker alone (attempts row / worker_crashed reject) does not count, nor one per node
    # that died during the attempt (Ray sees a node's death seconds late: attempts in between fail on it too).
    max_task_retries: int = Field(3, ge=0)


class TrainConfig(Strict):
    steps: int = Field(200, ge=1)
    batch_size: int = Field(2, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    checkpoint_every: int = Field(50, ge=1)
    resolution: int = Field(64, ge=16)
    cpus_per_worker: float = Field(1.0, gt=0)  # Ray Train worker CPUs; fractional values fit a 2-core machine
    seed: int = 0
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    # classifier-free guidance training: each of identity / expression / text is dropped with this probability
    cond_drop_prob: float = Field(0.05, ge=0, le=1)
    keep_checkpoints: int = Field(2, ge=1)


# Keys that change how a run executes, not what data it makes. `name` is not data either: two runs that differ
# only in name make the same candidate (triple) ids and bytes; their run ids still differ (<name>-<fingerprint>).
_RUN_KEYS_NOT_IN_FINGERPRINT = {"name", "output_root", "run_id", "rounds", "commit_rows", "commit_seconds",
                                "plan_block_rows", "max_stage_error_rate", "min_items_for_abort", "storage_options",
                                "max_attempts", "fault_injection"}


def _qc_fingerprint(qc: dict) -> dict:
    """QC decides, it makes no data: only the identity model (whose scores are stored) is fingerprinted.

    Thresholds are left out (`ciep qc redecide` re-decides from stored scores); the values they had before
    are kept as constants so that the ids of existing runs stay the same."""
    return {"identity": {"backend": qc["identity"]["backend"], "model": qc["identity"]["model"],
                         "max_leak_similarity": 0.92, "min_swap_similarity": 0.95},
            "expression": {"max_distance": 0.12}, "quality": {"min_sharpness": 20.0}}


class PipelineConfig(Strict):
    run: RunConfig = RunConfig()
    ray: RayConfig = RayConfig()
    corpus: CorpusConfig = CorpusConfig()
    ingest: IngestConfig = IngestConfig()
    pairing: PairingConfig = PairingConfig()
    expression_transfer: ExpressionTransferConfig = ExpressionTransferConfig()
    identity_swap: IdentitySwapConfig = IdentitySwapConfig()
    qc: QCConfig = QCConfig()
    models: ModelsConfig = ModelsConfig()
    train: TrainConfig = TrainConfig()
    release: ReleaseConfig = ReleaseConfig()

    @model_validator(mode="after")
    def _backend_needs(self) -> PipelineConfig:
        et = self.expression_transfer
        if et.backend == "eadapter" and not et.base_model:
            raise ValueError("expression_transfer.base_model is required with backend 'eadapter'")
        if self.identity_swap.backend == "onnx" and not self.identity_swap.model:
            raise ValueError("identity_swap.model is required with backend 'onnx'")
        if self.qc.identity.backend == "arcface" and not self.qc.identity.model:
            raise ValueError("qc.identity.model is required with backend 'arcface'")
        if self.ingest.detector == "scrfd" and not self.ingest.scrfd_model:
            raise ValueError("ingest.scrfd_model is required with detector 'scrfd'")
        return self

    def data_fingerprint(self) -> str:
        """Hash of everything that defines the data (not resources, not Ray), used for the default run id."""
        d = self.model_dump(mode="json", exclude={"ray": True, "run": _RUN_KEYS_NOT_IN_FINGERPRINT})
        for section in ("ingest", "expression_transfer", "identity_swap"):
            d[section].pop("resources", None)
        for key in ("cache_dir", "storage_options"):
            d["models"].pop(key, None)
        d["qc"] = _qc_fingerprint(d["qc"])
        d["pairing"] = pairing_fingerprint(d["pairing"])
        d["corpus"]["storage_options"] = without_secrets(d["corpus"]["storage_options"])
        d.pop("train", None)
        d["release"] = {"splits": d["release"]["splits"]}  # pairing keeps j in i's split
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    def redacted_dump(self) -> dict:
        """model_dump(mode="json") with secrets in every storage_options redacted: what run.json records."""
        d = self.model_dump(mode="json")
        for section in ("run", "corpus", "models"):
            d[section]["storage_options"] = redact_secrets(d[section]["storage_options"])
        return d

    def resolved_run_id(self) -> str:
        return self.run.run_id or f"{self.run.name}-{self.data_fingerprint()}"

    def output_location(self) -> Location:
        """run.output_root with run.storage_options."""
        return self.run.location

    def run_location(self) -> Location:
        """This run's folder under run.output_root, with run.storage_options."""
        return self.output_location().join(self.resolved_run_id())


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)


def config_from_dict(data: dict, source: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def _deep_update(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(pairs: list[str]) -> dict:
    """Turn ["run.seed=7", "qc.expression.max_distance=0.2"] into a nested dict (values parsed as YAML)."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not KEY=VALUE")
        key, raw = pair.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config (default: the embedded demo config) and apply KEY=VALUE overrides."""
    source = str(path or DEFAULT_CONFIG_PATH)
    try:
        with Location(source).open(mode="r") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {source} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {source} must be a mapping at the top level")
    if overrides:
        data = _deep_update(data, parse_overrides(overrides))
        try:
            return PipelineConfig.model_validate(data)
        except ValidationError as err:
            raise ConfigError(_format_override_errors(err, source, overrides)) from None
    return config_from_dict(data, source)


def _format_override_errors(err: ValidationError, source: str, overrides: list[str]) -> str:
    """Errors of a config with --set overrides: each one blamed on the override that set the key, else the file."""
    keys = {pair.split("=", 1)[0]: pair for pair in overrides}
    by_override: list[str] = []
    in_file: list[str] = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        pair = next((p for k, p in keys.items() if loc == k or loc.startswith(k + ".") or k.startswith(loc + ".")),
                    None)
        (by_override if pair else in_file).append(f"  {loc}: {e['msg']}" + (f" (from --set {pair})" if pair else ""))
    lines = []
    if by_override:
        lines += ["invalid --set override:"] + by_override
    if in_file:
        lines += [f"invalid config {source}:"] + in_file
    return "\n".join(lines)
