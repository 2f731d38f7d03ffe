"""Expression transfer: put T's expression on identity j's face with the configured backend (batched), with j's
mouth donor (the plan's mouth_* columns) for backends that take one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pyarrow as pa

from manifests.artifacts import ArtifactStore
from stages.base import RowRejected, RowwiseStage
from stages.config import ExpressionTransferConfig
from stages.face.backends import build_expression_transferer
from stages.face.landmark_warp import PAINTED_RULES
from stages.face.protocols import TransferRequest
from stages.face.types import landmarks_array


class ExpressionTransferStage(RowwiseStage):
    name = "expression_transfer"
    input_columns = ("candidate_id", "seed", "carrier_aligned_path", "carrier_landmarks68", "s_landmarks68",
                     "t_aligned_path", "t_landmarks68", "mouth_aligned_path", "mouth_landmarks68")
    output_fields = (
        pa.field("expression_backend", pa.string()),
        pa.field("expression_model", pa.string()),
        pa.field("expression_model_sha256", pa.string()),
        pa.field("transfer_path", pa.string()),
        pa.field("transfer_sha256", pa.string()),
        pa.field("transfer_mouth_rule", pa.string()),  # the CPU warp's mouth rule (MOUTH_RULES); null for others
    )

    config_section = "expression_transfer"
    config: ExpressionTransferConfig

    def setup(self) -> None:
        self.transferer = build_expression_transferer(self.config, self.context.run)
        self.artifacts = ArtifactStore(self.context.run)
        # the CPU warp decides a mouth rule per request and renders the donor's mouth; a backend that makes its own
        # mouth (the E-Adapter) has no rule_for, and the donor image is not read for it
        self.rule_for = getattr(self.transferer, "rule_for", None)

    def _request(self, row: dict[str, Any]) -> TransferRequest:
        """The backend's request, its mouth rule decided once here (the refusal and the render both use it)."""
        donor = self.rule_for is not None and row.get("mouth_aligned_path") and row.get("mouth_landmarks68")
        request = TransferRequest(
            carrier_rgb=self.artifacts.get(row["carrier_aligned_path"]),
            carrier_landmarks=landmarks_array(row["carrier_landmarks68"]),
            source_landmarks=landmarks_array(row["s_landmarks68"]),
            target_rgb=self.artifacts.get(row["t_aligned_path"]),
            target_landmarks=landmarks_array(row["t_landmarks68"]),
            seed=int(row["seed"]),
            mouth_rgb=self.artifacts.get(row["mouth_aligned_path"]) if donor else None,
            mouth_landmarks=landmarks_array(row["mouth_landmarks68"]) if donor else None,
        )
        return request if self.rule_for is None else replace(request, mouth_rule=self.rule_for(request))

    def _refusal(self, req: TransferRequest) -> RowRejected | None:
        """no_mouth_donor where the CPU warp would paint T's mouth state and expression_transfer.painted_mouths is
        off; None otherwise (and for backends that make the mouth themselves)."""
        rule = req.mouth_rule
        if self.config.painted_mouths or rule not in PAINTED_RULES:
            return None
        state = "closed" if rule == "close_lips" else "open"
        return RowRejected("no_mouth_donor", f"T's mouth is {state}, the carrier's is not, and j has no photo with a "
                                             f"{state} mouth to take it from (mouth rule {rule}; "
                                             "expression_transfer.painted_mouths paints one)")

    def _store(self, row: dict[str, Any], rgb, mouth_rule: str | None) -> dict[str, Any]:
        url, sha = self.artifacts.put("transfer", row["candidate_id"], rgb)
        return dict(expression_backend=self.config.backend,
                    expression_model=self.transferer.model_id,
                    expression_model_sha256=self.transferer.model_sha256,
                    transfer_path=url, transfer_sha256=sha, transfer_mouth_rule=mouth_rule)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        request = self._request(row)
        refusal = self._refusal(request)
        if refusal is not None:
            raise refusal
        return self._store(row, self.transferer.transfer([request])[0], request.mouth_rule)

    def process_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """One backend call for the whole batch; if it fails, retry item by item to isolate the bad one."""
        try:
            requests = [self._request(r) for r in rows]
            refusals = [self._refusal(r) for r in requests]
            todo = [k for k, refusal in enumerate(refusals) if refusal is None]
            images = self.transferer.transfer([requests[k] for k in todo])
            if len(images) != len(todo):
                raise RuntimeError(f"{len(images)} images for {len(todo)} requests")
        except Exception:  # noqa: BLE001 - fall back to per-item calls, which record per-item errors
            return super().process_rows(rows)
        out: dict[int, dict[str, Any] | Exception] = {k: r for k, r in enumerate(refusals) if r is not None}
        for k, rgb in zip(todo, images, strict=True):
            try:
                out[k] = self._store(rows[k], rgb, requests[k].mouth_rule)
            except Exception as exc:  # noqa: BLE001
                out[k] = exc
        return [out[k] for k in range(len(rows))]
