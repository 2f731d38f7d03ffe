"""Expression transfer: put T's expression on identity j's face with the configured backend (batched)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from manifests.artifacts import ArtifactStore
from stages.base import RowwiseStage
from stages.config import ExpressionTransferConfig
from stages.face.backends import build_expression_transferer
from stages.face.protocols import TransferRequest
from stages.face.types import landmarks_array


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
