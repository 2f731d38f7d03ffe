"""Typed run configuration, loaded from YAML. Unknown keys and bad values are errors that name the key."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Literal

import fsspec
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "demo.yaml"


class ConfigError(ValueError):
    """A configuration file could not be read or does not validate."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageResources(Strict):
    """What one actor of a stage asks Ray for, and how many actors the pool may have."""

    num_cpus: float = Field(0.5, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    batch_size: int = Field(4, ge=1)
    # "auto" sizes the pool from the cluster's resources; an int fixes max actors.
    concurrency: int | Literal["auto"] = "auto"

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("concurrency must be >= 1 or 'auto'")
        return v


SECRET_KEY_PATTERN = re.compile(r"key|secret|token|password|passwd|credential|session|auth|signature", re.I)


def redact_secrets(value: object) -> object:
    """A copy of a storage_options-like value with every secret-looking key's value replaced by "<redacted>"."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if SECRET_KEY_PATTERN.search(str(k)) else redact_secrets(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(v) for v in value]
    return value


# Loggers that print request headers at DEBUG (botocore's "Sending http request" shows the access key id in the
# Authorization header). Held at INFO or above while a run executes, whatever the root level.
CREDENTIAL_LOGGERS = ("botocore", "aiobotocore", "urllib3", "gcsfs", "google.auth", "adlfs", "azure")


def quiet_credential_loggers() -> None:
    for name in CREDENTIAL_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def _without_secrets(value: object) -> object:
    """storage_options minus secret-looking keys: what may define data (endpoint, region), never credentials."""
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if not SECRET_KEY_PATTERN.search(str(k))}
    return value


# fsspec options (endpoint_url, key, secret, client_kwargs, ...). Kept out of repr; secret-looking keys are
# redacted in run.json (PipelineConfig.redacted_dump) and never part of the data fingerprint. Prefer credentials
# from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ...) over config.
StorageOptions = dict[str, object]


def _storage_options_field():
    return Field(default_factory=dict, repr=False)


class FaultInjectionConfig(Strict):
    """TESTING HOOK (tests/hardening only): make one stage, or the driver's commit, fail on a chosen item.

    at:     a stage name (ingest, expression_transfer, identity_swap, qc, or any RowwiseStage) or "commit"
            (the driver, after a manifest shard's files are written and before its commit marker).
    item:   fnmatch pattern over the item id: input_key in ingest, candidate_id after pairing, the shard name
            for "commit"; "*" matches every item.
    action: "raise"  an exception from the model call, as a broken model would (-> stage_error row);
            "exit"   os._exit(FAULT_EXIT_CODE) of the process (actor or driver), as a crash would;
            "pause"  create `marker`, then sleep, so a test can SIGKILL the driver at exactly this point.
    marker: local file. With raise/exit the fault fires only in the process that creates it first (O_EXCL),
            so a restarted actor does not fail again on the retried batch; with pause it is the signal.
    Not part of the data fingerprint: a faulted run and its resume are the same run id as a clean one.
    """

    at: str
    item: str = "*"
    action: Literal["raise", "exit", "pause"]
    marker: str | None = None
    # action "raise" only: what is raised ("fault": a model bug, a permanent stage_error; the others are the
    # transient errors of stages/errors.py: a full disk, an I/O error, a storage timeout, MemoryError);
    # `fraction` of the matching items (chosen by a hash of item and point), only while the item's attempt is
    # at most `max_attempt` (None: every attempt). `at` may be a glob over stage names ("*": every stage).
    error: Literal["fault", "enospc", "eio", "timeout", "memory"] = "fault"
    fraction: float = Field(1.0, ge=0, le=1)
    seed: int = 0  # salt of the hash that picks the `fraction`
    max_attempt: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _pause_needs_marker(self) -> "FaultInjectionConfig":
        if self.action == "pause" and not self.marker:
            raise ValueError("fault_injection.marker is required with action 'pause'")
        return self


class RunConfig(Strict):
    name: str = "demo"
    output_root: str = "runs"  # fsspec URL or local path, relative paths are relative to the cwd
    # fsspec options for output_root (run folder, manifests, images); see StorageOptions.
    storage_options: StorageOptions = _storage_options_field()
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
    fault_injection: FaultInjectionConfig | None = None  # testing hook, see FaultInjectionConfig


class RayConfig(Strict):
    address: str | None = None  # None: start or join a local Ray; "auto" inside `ray job submit`
    num_cpus: int | None = None  # only when starting a local Ray
    # CPUs kept free for Ray Data's read and write tasks when sizing actor pools.
    reserve_cpus: float = Field(0.5, ge=0)
    # A stage actor that dies (crash, OOM kill, lost node) is restarted and its batch retried on the new actor
    # up to this many times; a batch that kills its actor every time then fails the job instead of looping.
    max_task_retries: int = Field(3, ge=0)


class CorpusConfig(Strict):
    root: str = "data/demo_corpus"  # <root>/<identity>/<file>
    index: str | None = None  # Parquet or CSV with identity, path[, expression]; paths relative to root
    # Without an index, the expression label is the file stem minus a trailing _<digits> ("smiling_02").
    expression_from_filename: bool = True
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
    storage_options: StorageOptions = _storage_options_field()


class IngestConfig(Strict):
    detector: Literal["dlib", "scrfd"] = "dlib"
    crop_size: int = Field(256, ge=64, le=2048)
    min_face_size: int = Field(48, ge=8)  # px, shorter side of the detected box in the original image
    max_pixels: int = Field(40_000_000, ge=1)  # decompression-bomb guard, checked before decoding
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1)
    detector_upsample: int = Field(0, ge=0, le=2)
    scrfd_model: str | None = None  # registry name, used with detector: scrfd
    scrfd_input_size: int = Field(640, ge=32)  # square SCRFD input (letterboxed), multiple of 32
    scrfd_threshold: float = Field(0.5, gt=0, lt=1)
    scrfd_nms_threshold: float = Field(0.4, gt=0, lt=1)
    resources: StageResources = StageResources()


class PairingConfig(Strict):
    max_targets_per_identity: int | None = Field(None, ge=1)
    # Pick the swap-source identity j from i's release split (release.splits), so that no triple straddles
    # two splits and releases keep every triple; falls back to any identity when i's split has no other.
    split_closed: bool = True
    # Identities whose mean embeddings have cosine >= this are one person under several names
    # (stages/identity_clusters.py): j is never drawn from i's cluster and releases split by cluster. Default
    # for dlib (London set, `ciep calibrate-identity`: different people max 0.949, same person median 0.988);
    # ArcFace needs its own value. null: no clustering.
    same_person_similarity: float | None = Field(0.96, ge=-1, le=1)


class ExpressionTransferConfig(Strict):
    backend: Literal["landmark_warp", "eadapter"] = "landmark_warp"
    # Round 0 may use this backend instead (e.g. landmark_warp to bootstrap the first refined adapter when no
    # good base adapter exists yet); later rounds use `backend` with the adapter trained on the round before.
    bootstrap_backend: Literal["landmark_warp"] | None = None
    # eadapter backend
    base_model: str | None = None  # local/fsspec folder in diffusers layout
    adapter: str | None = None  # folder written by EAdapter.save_pretrained
    num_inference_steps: int = Field(30, ge=1)
    guidance_scale: float = Field(5.0, ge=0)
    identity_scale: float = Field(1.0, ge=0)
    expression_scale: float = Field(1.0, ge=0)
    prompt: str = "a photo of a face"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    image_encoder: str | None = None  # CLIPVisionModelWithProjection folder; default <base_model>/image_encoder
    cache_dir: str | None = None  # local copies of fsspec base models; default $CIEP_CACHE_DIR or ~/.cache/ciep
    resolution: int | None = Field(None, ge=16)  # generation size; default unet sample_size * VAE factor
    strength: float = Field(1.0, gt=0, le=1)  # 1: from pure noise; < 1: img2img from the carrier crop
    # architecture of a fresh adapter (adapter: null, or training without init_adapter)
    identity_dim: int = Field(128, ge=1)  # 128: dlib face recognition, 512: ArcFace
    identity_tokens: int = Field(4, ge=1)
    expression_tokens: int = Field(16, ge=1)
    expression_features: Literal["hidden_states", "image_embeds"] = "hidden_states"
    identity_layers: tuple[str, ...] = ("*attn2",)  # glob patterns over cross-attention layer names
    expression_layers: tuple[str, ...] = ("up_blocks.*attn2",)  # the expression-sensitive layers
    adapter_seed: int = 0
    resources: StageResources = StageResources()


class IdentitySwapConfig(Strict):
    backend: Literal["classic", "onnx"] = "classic"
    model: str | None = None  # registry name for backend onnx, e.g. inswapper_128
    feather_px: int = Field(11, ge=1)
    # When no face is detected in the expression-transfer output, swap onto T's landmarks instead of
    # rejecting (transfers are rendered in T's aligned frame); recorded per row as swap_target_face.
    target_landmarks_fallback: bool = False
    # onnx backend: ArcFace that makes the swap source embedding (default: the swapper's registry embedder,
    # arcface_w600k_r50; deliberately not qc.identity.model, so QC can judge with another network).
    embedder_model: str | None = None
    converter_model: str | None = None  # embedding converter for simswap (default: its registry converter)
    # FaceFusion-style paste-back for hyperswap/simswap: box mask blur (share of crop) and padding in %
    # (top, right, bottom, left); optional occlusion (XSeg) and region (BiSeNet) masks when named.
    mask_blur: float = Field(0.3, ge=0, le=1)
    mask_padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    occluder_model: str | None = None  # e.g. xseg_3
    parser_model: str | None = None  # e.g. bisenet_resnet_34
    mask_regions: tuple[str, ...] = ("skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye",
                                     "glasses", "nose", "mouth", "upper-lip", "lower-lip")
    resources: StageResources = StageResources()

    @field_validator("mask_regions")
    @classmethod
    def _known_regions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        known = {"skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "glasses", "nose", "mouth",
                 "upper-lip", "lower-lip"}
        bad = sorted(set(v) - known)
        if bad or not v:
            raise ValueError(f"unknown mask regions {bad}; choose from {sorted(known)}")
        return v


class IdentityQCConfig(Strict):
    backend: Literal["dlib", "arcface"] = "dlib"
    model: str | None = None  # registry name for arcface, e.g. arcface_w600k_r50
    # cosine similarities; R must not look like T's identity and must look like the swap source.
    # dlib defaults from the London set (`ciep calibrate-identity`): different people p99 0.916, same person
    # min 0.953. ArcFace scores are on another scale: calibrate before changing backend.
    max_leak_similarity: float = Field(0.92, ge=-1, le=1)
    min_swap_similarity: float = Field(0.95, ge=-1, le=1)


class ExpressionQCConfig(Strict):
    max_distance: float = Field(0.12, gt=0)


class QualityQCConfig(Strict):
    min_sharpness: float = Field(20.0, ge=0)  # variance of the Laplacian on the aligned grey face


class QCConfig(Strict):
    identity: IdentityQCConfig = IdentityQCConfig()
    expression: ExpressionQCConfig = ExpressionQCConfig()
    quality: QualityQCConfig = QualityQCConfig()
    resources: StageResources = StageResources()


class ModelsConfig(Strict):
    root: str = "models"  # folder or fsspec URL holding ONNX files
    # remote model files are copied here once (local folder); never part of the data fingerprint
    cache_dir: str = "~/.cache/ciep/models"
    storage_options: StorageOptions = _storage_options_field()
    providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    # name -> sha256 accepted instead of the registry's; recorded in the manifest when used.
    hash_overrides: dict[str, str] = Field(default_factory=dict)


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


class ReleaseConfig(Strict):
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    license: str = "cc-by-4.0"

    @field_validator("splits")
    @classmethod
    def _sum_to_one(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(r < 0 for r in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError("split ratios must be non-negative and sum to 1")
        return v


# Keys that change how a run executes, not what data it makes.
_RUN_KEYS_NOT_IN_FINGERPRINT = {"output_root", "run_id", "rounds", "commit_rows", "commit_seconds",
                                "max_stage_error_rate", "min_items_for_abort", "storage_options", "max_attempts",
                                "fault_injection"}


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
    def _backend_needs(self) -> "PipelineConfig":
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
        for section in ("ingest", "expression_transfer", "identity_swap", "qc"):
            d[section].pop("resources", None)
        for key in ("cache_dir", "storage_options"):
            d["models"].pop(key, None)
        d["corpus"]["storage_options"] = _without_secrets(d["corpus"]["storage_options"])
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
        with fsspec.open(source, "r") as fh:
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
    by_override, in_file = [], []
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
