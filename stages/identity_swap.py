"""Identity swap: replace the face in the expression-transferred image with swap-source j's face."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from manifests.artifacts import ArtifactStore
from stages.base import RowRejected, RowwiseStage
from stages.config import IdentitySwapConfig
from stages.face.backends import build_detector, build_swapper
from stages.face.types import face_from_landmarks, landmarks_array, largest_face


class IdentitySwapStage(RowwiseStage):
    name = "identity_swap"
    input_columns = ("candidate_id", "transfer_path", "swap_aligned_path", "swap_landmarks68", "t_landmarks68")
    output_fields = (
        pa.field("swap_backend", pa.string()),
        pa.field("swap_model", pa.string()),
        pa.field("swap_model_sha256", pa.string()),
        pa.field("reference_path", pa.string()),
        pa.field("reference_sha256", pa.string()),
        pa.field("swap_target_face", pa.string()),  # "detected", or "target_landmarks" (see process_row)
        pa.field("swap_keep_regions", pa.string()),  # identity_swap.keep_regions, comma-joined ("" keeps none)
    )

    config_section = "identity_swap"
    config: IdentitySwapConfig

    def setup(self) -> None:
        self.swapper = build_swapper(self.config, self.context.models)
        self.detector = build_detector(self.context.ingest, self.context.models)
        self.artifacts = ArtifactStore(self.context.run)

    def _prepare(self, row: dict[str, Any]) -> tuple[tuple, str]:
        """(source, source face, target, target face) for one row, and how the target face was found."""
        target = self.artifacts.get(row["transfer_path"])
        target_face = largest_face(self.detector.detect(target))
        how = "detected"
        if target_face is None or target_face.landmarks68 is None:
            # Every transfer backend renders in T's aligned frame with T's expression, so T's landmarks are
            # where the face should be. With identity_swap.target_landmarks_fallback the swap goes there; QC
            # then judges R as always. Without it, the item is rejected.
            if not self.config.target_landmarks_fallback:
                raise RowRejected("transfer_no_face", "no face found in the expression-transfer output")
            target_face = face_from_landmarks(landmarks_array(row["t_landmarks68"]))
            how = "target_landmarks"
        source = self.artifacts.get(row["swap_aligned_path"])
        source_face = face_from_landmarks(landmarks_array(row["swap_landmarks68"]))
        return (source, source_face, target, target_face), how

    def _store(self, row: dict[str, Any], swapped: np.ndarray, how: str) -> dict[str, Any]:
        url, sha = self.artifacts.put("reference", row["candidate_id"], swapped)
        return dict(swap_backend=self.config.backend, swap_model=self.swapper.model_id,
                    swap_model_sha256=self.swapper.model_sha256, reference_path=url, reference_sha256=sha,
                    swap_target_face=how, swap_keep_regions=",".join(self.config.keep_regions))

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        item, how = self._prepare(row)
        return self._store(row, self.swapper.swap(*item), how)

    def process_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """Batched through swap_batch when the backend has it; a failed batch is retried item by item."""
        swap_batch = getattr(self.swapper, "swap_batch", None)
        if swap_batch is None:
            return super().process_rows(rows)
        prepared: list[tuple[tuple, str] | Exception] = []
        for row in rows:
            try:
                prepared.append(self._prepare(row))
            except Exception as exc:  # noqa: BLE001 - recorded as this row's reject
                prepared.append(exc)
        ok = [(row, p) for row, p in zip(rows, prepared, strict=False) if not isinstance(p, Exception)]
        try:
            swapped = swap_batch([p[0] for _, p in ok])
        except Exception:  # noqa: BLE001 - isolate the failing item
            return super().process_rows(rows)
        done = {id(row): self._store(row, img, p[1]) for (row, p), img in zip(ok, swapped, strict=False)}
        return [p if isinstance(p, Exception) else done[id(row)] for row, p in zip(rows, prepared, strict=False)]
