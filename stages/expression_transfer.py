"""Expression transfer: put T's expression on identity j's face with the configured backend (batched)."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from core.config import StageResources, Strict
from manifests.artifacts import ArtifactStore
from stages.base import RowwiseStage
from stages.face.backends import build_expression_transferer
from stages.face.protocols import TransferRequest
from stages.pairing import landmarks_array


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


class ExpressionTransferStage(RowwiseStage):
    name = "expression_transfer"
    input_columns = ("candidate_id", "seed", "carrier_aligned_path", "carrier_landmarks68", "s_landmarks68",
                     "t_aligned_path", "t_landmarks68")
    output_fields = (
        pa.field("expression_backend", pa.string()),
        pa.field("expression_model", pa.string()),
        pa.field("expression_model_sha256", pa.string()),
        pa.field("transfer_path", pa.string()),
        pa.field("transfer_sha256", pa.string()),
    )

    config_section = "expression_transfer"
    config: ExpressionTransferConfig

    def setup(self) -> None:
        self.transferer = build_expression_transferer(self.config, self.context.run)
        self.artifacts = ArtifactStore(self.context.run)

    def _request(self, row: dict[str, Any]) -> TransferRequest:
        return TransferRequest(
            carrier_rgb=self.artifacts.get(row["carrier_aligned_path"]),
            carrier_landmarks=landmarks_array(row["carrier_landmarks68"]),
            source_landmarks=landmarks_array(row["s_landmarks68"]),
            target_rgb=self.artifacts.get(row["t_aligned_path"]),
            target_landmarks=landmarks_array(row["t_landmarks68"]),
            seed=int(row["seed"]),
        )

    def _store(self, row: dict[str, Any], rgb) -> dict[str, Any]:
        url, sha = self.artifacts.put("transfer", row["candidate_id"], rgb)
        return dict(expression_backend=self.config.backend,
                    expression_model=self.transferer.model_id,
                    expression_model_sha256=self.transferer.model_sha256,
                    transfer_path=url, transfer_sha256=sha)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return self._store(row, self.transferer.transfer([self._request(row)])[0])

    def process_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """One backend call for the whole batch; if it fails, retry item by item to isolate the bad one."""
        try:
            images = self.transferer.transfer([self._request(r) for r in rows])
        except Exception:  # noqa: BLE001 - fall back to per-item calls, which record per-item errors
            return super().process_rows(rows)
        out: list[dict[str, Any] | Exception] = []
        for row, rgb in zip(rows, images, strict=False):
            try:
                out.append(self._store(row, rgb))
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out
