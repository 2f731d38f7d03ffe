"""The config sections of the stages and their face backends: the bottom of `stages/`, depending only on `core`.

Each class is one section of the run config (YAML key in brackets); stages, backends, `qc/` and
`pipeline/config.py` import them from here, downwards, so no backend reaches up into a stage module for its
config. `pipeline/config.py` composes them into `PipelineConfig` (same YAML shape, same fingerprint).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from core.config import StageResources, StorageOptions, Strict, storage_options_field
from core.location import Location

__all__ = ["KEEP_REGION_NAMES", "CorpusConfig", "ExpressionTransferConfig", "IdentityModelConfig",
           "IdentitySwapConfig", "IngestConfig", "ModelsConfig"]


class CorpusConfig(Strict):
    """Where the images come from (`corpus`): listed by stages/corpus.py."""

    root: str = "data/demo_corpus"  # <root>/<identity>/<file>
    index: str | None = None  # Parquet or CSV with identity, path[, expression]; paths relative to root
    # Without an index, the expression label is the file stem minus a trailing _<digits> ("smiling_02").
    expression_from_filename: bool = True
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
    storage_options: StorageOptions = storage_options_field()

    @property
    def location(self) -> Location:
        """The corpus root with storage_options: every listing and corpus-file read goes through it."""
        return Location(self.root, dict(self.storage_options))


class IngestConfig(Strict):
    """The ingest stage and the face detector every stage uses (`ingest`)."""

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


class IdentityModelConfig(Strict):
    """Which identity embedder ingest and QC use (the `qc.identity` section adds QC's thresholds to it)."""

    backend: Literal["dlib", "arcface"] = "dlib"
    model: str | None = None  # registry name for arcface, e.g. arcface_w600k_r50


class ModelsConfig(Strict):
    """Where ONNX model files are found (`models`): stages/onnx/model_files.py resolves and hash-pins them."""

    root: str = "models"  # folder or fsspec URL holding ONNX files
    # remote model files are copied here once (local folder); never part of the data fingerprint
    cache_dir: str = "~/.cache/ciep/models"
    storage_options: StorageOptions = storage_options_field()
    providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    # name -> sha256 accepted instead of the registry's; recorded in the manifest when used.
    hash_overrides: dict[str, str] = Field(default_factory=dict)

    @property
    def location(self) -> Location:
        """models.root with storage_options: where model files are looked up."""
        return Location(self.root, dict(self.storage_options))


class ExpressionTransferConfig(Strict):
    """The expression-transfer stage and its backend (`expression_transfer`)."""

    backend: Literal["landmark_warp", "eadapter"] = "landmark_warp"
    # Round 0 may use this backend instead (e.g. landmark_warp to bootstrap the first refined adapter when no
    # good base adapter exists yet); later rounds use `backend` with the adapter trained on the round before.
    bootstrap_backend: Literal["landmark_warp"] | None = None
    # landmark_warp backend: where the carrier's mouth is in the wrong state for T and j has no photo in T's state
    # (no mouth donor that fits), paint the mouth (close the lips / synthesise an interior) instead of refusing the
    # candidate (reason no_mouth_donor). Painted mouths are what an eye sees as artificial (benchmarks/RESULTS.md).
    painted_mouths: bool = False
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


# The expression regions a swap can keep from the transfer output ("left" = image left), drawn from the 68 landmarks
# by stages/face/expression_regions.py.
KEEP_REGION_NAMES = ("left-eye", "right-eye", "left-eyebrow", "right-eyebrow", "mouth")


class IdentitySwapConfig(Strict):
    """The identity-swap stage and its backend (`identity_swap`)."""

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
    # Both backends: the expression regions kept from the expression-transfer output (the image whose expression
    # is right; it is j's carrier re-posed, so these pixels are j's): the swap brings j's face shape, skin and
    # nose but not the swap photo's eye opening, brow position or mouth. Drawn from the transfer's 68 landmarks
    # (eye ellipses with both lids, brow bands, the outer-lip polygon), feathered over keep_feather x the eye
    # width (the mouth: 3 px + 2 px, as before). () keeps nothing; ["mouth"] is the swap before issue 19.
    # Recorded per candidate as swap_keep_regions.
    keep_regions: tuple[str, ...] = KEEP_REGION_NAMES
    keep_feather: float = Field(0.15, ge=0, le=1)
    resources: StageResources = StageResources()

    @field_validator("keep_regions")
    @classmethod
    def _known_keep_regions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = sorted(set(v) - set(KEEP_REGION_NAMES))
        if bad or len(set(v)) != len(v):
            raise ValueError(f"keep_regions: unknown or repeated {bad or list(v)}; "
                             f"choose from {list(KEEP_REGION_NAMES)}")
        return v

    @field_validator("mask_regions")
    @classmethod
    def _known_regions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        known = {"skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "glasses", "nose", "mouth",
                 "upper-lip", "lower-lip"}
        bad = sorted(set(v) - known)
        if bad or not v:
            raise ValueError(f"unknown mask regions {bad}; choose from {sorted(known)}")
        return v
