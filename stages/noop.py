"""No-op stand-ins for the three generation stages, for measuring orchestration (benchmarks/bench_orchestration.py).

Each reads one image and writes it back under its own kind, like the real stage (real image I/O through the
ArtifactStore), runs no model, and produces the real stage's output columns, so the real commit path (candidates,
qc, triples) takes their rows unchanged. Same resources as the stage each stands for.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

from manifests.artifacts import ArtifactStore
from manifests.schemas import QC_FIELDS
from stages.base import RowwiseStage
from stages.expression_transfer import ExpressionTransferStage
from stages.identity_swap import IdentitySwapStage

NOOP_SHA = "0" * 64


class _NoopImageStage(RowwiseStage):
    read_column: ClassVar[str]
    kind: ClassVar[str]

    def setup(self) -> None:
        self.artifacts = ArtifactStore(self.context.run)

    def copy_image(self, row: dict[str, Any]) -> tuple[str, str]:
        return self.artifacts.put(self.kind, row["candidate_id"], self.artifacts.get(row[self.read_column]))


class NoopTransferStage(_NoopImageStage):
    name = "noop_transfer"
    input_columns = ("candidate_id", "carrier_aligned_path")
    output_fields = ExpressionTransferStage.output_fields
    read_column, kind, config_section = "carrier_aligned_path", "transfer", "expression_transfer"

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        url, sha = self.copy_image(row)
        return dict(expression_backend="noop", expression_model="noop", expression_model_sha256=NOOP_SHA,
                    transfer_path=url, transfer_sha256=sha)


class NoopSwapStage(_NoopImageStage):
    name = "noop_swap"
    input_columns = ("candidate_id", "transfer_path")
    output_fields = IdentitySwapStage.output_fields
    read_column, kind, config_section = "transfer_path", "reference", "identity_swap"

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        url, sha = self.copy_image(row)
        out = dict(swap_backend="noop", swap_model="noop", swap_model_sha256=NOOP_SHA, reference_path=url,
                   reference_sha256=sha)
        return {f.name: out.get(f.name, "noop") for f in self.output_fields}


class NoopQCStage(_NoopImageStage):
    """Reads R (and nothing else); accepts about half the items, by candidate id."""

    name = "noop_qc"
    input_columns = ("candidate_id", "reference_path")
    output_fields = QC_FIELDS
    read_column, kind, config_section = "reference_path", "", "qc"

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        self.artifacts.get(row["reference_path"])
        accepted = int(hashlib.sha256(row["candidate_id"].encode()).hexdigest()[0], 16) < 8
        reason = "accepted" if accepted else "identity_leak"
        return dict(accepted=accepted, reason=reason, reasons=[] if accepted else [reason], face_found=True,
                    id_sim_rt=0.5, id_sim_rj=0.95, expr_dist_rt=0.05, sharpness=100.0, identity_backend="noop",
                    identity_model="noop", identity_model_sha256=NOOP_SHA, thresholds=json.dumps({}))


NOOP_GENERATION_STAGES = [NoopTransferStage, NoopSwapStage, NoopQCStage]


class DryGenerationStage(RowwiseStage):
    """No image at all: fills every generation column (expression transfer, swap, QC) for a dry run of the
    orchestration at scale (benchmarks/bench_plan_stream.py). Accepts about half the items, by candidate id."""

    name = "dry_generation"
    input_columns = ("candidate_id",)
    output_fields = (*ExpressionTransferStage.output_fields, *IdentitySwapStage.output_fields, *QC_FIELDS)
    config_section = "qc"  # the qc section's resources

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        accepted = int(hashlib.sha256(row["candidate_id"].encode()).hexdigest()[0], 16) < 8
        reason = "accepted" if accepted else "identity_leak"
        out: dict[str, Any] = {f.name: None for f in self.output_fields}
        out.update(expression_backend="dry", expression_model="dry", expression_model_sha256=NOOP_SHA,
                   transfer_path="dry", transfer_sha256=NOOP_SHA, swap_backend="dry", swap_model="dry",
                   swap_model_sha256=NOOP_SHA, reference_path="dry", reference_sha256=NOOP_SHA, accepted=accepted,
                   reason=reason, reasons=[] if accepted else [reason], face_found=True, id_sim_rt=0.5,
                   id_sim_rj=0.95, expr_dist_rt=0.05, sharpness=100.0, identity_backend="dry", identity_model="dry",
                   identity_model_sha256=NOOP_SHA, thresholds=json.dumps({}))
        return out
