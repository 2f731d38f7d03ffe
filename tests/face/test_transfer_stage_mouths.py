"""The expression-transfer stage and the mouth donor (issue 19): the plan's donor reaches the CPU transfer, each
candidate records its mouth rule, and a candidate whose mouth would have to be painted is refused with a reason
(no_mouth_donor) unless expression_transfer.painted_mouths."""

from __future__ import annotations

import pyarrow as pa

from core.location import Location
from manifests.artifacts import ArtifactStore
from stages.base import StageContext
from stages.config import ExpressionTransferConfig, IngestConfig
from stages.expression_transfer import ExpressionTransferStage


def _rows(tmp_path, demo_face, donors: list[tuple[str, str] | None]) -> tuple[Location, pa.Table]:
    """One plan row per donor: T 004 neutral (closed), S 004 smiling, carrier 009 smiling (open, teeth)."""
    run = Location(str(tmp_path / "run"))
    store = ArtifactStore(run)
    faces = {key: demo_face(*key)[2] for key in [("004", "neutral"), ("004", "smiling"), ("009", "smiling"),
                                                 ("009", "neutral")]}
    paths = {key: store.put("aligned", "-".join(key), f.image)[0] for key, f in faces.items()}
    def lm(key):
        return faces[key].landmarks68.reshape(-1).astype(float).tolist()
    rows = [dict(candidate_id=f"c{k}", seed=k, carrier_aligned_path=paths[("009", "smiling")],
                 carrier_landmarks68=lm(("009", "smiling")), s_landmarks68=lm(("004", "smiling")),
                 t_aligned_path=paths[("004", "neutral")], t_landmarks68=lm(("004", "neutral")),
                 mouth_aligned_path=paths[d] if d else None, mouth_landmarks68=lm(d) if d else None, status="ok")
            for k, d in enumerate(donors)]
    return run, pa.Table.from_pylist(rows)


def _stage(run: Location, **config) -> ExpressionTransferStage:
    stage = ExpressionTransferStage(ExpressionTransferConfig(**config),
                                    StageContext(run=run, run_id="r", fingerprint="f", ingest=IngestConfig()))
    stage.setup()
    return stage


def test_donor_used_and_recorded_and_a_mouth_without_donor_refused(tmp_path, demo_face):
    # c0: j's closed photo as donor; c1: the donor is j's open photo (wrong state); c2: no donor at all
    run, plan = _rows(tmp_path, demo_face, [("009", "neutral"), ("009", "smiling"), None])
    out = _stage(run).process_batch(plan).to_pylist()
    assert out[0]["status"] == "ok" and out[0]["transfer_mouth_rule"] == "donor_mouth" and out[0]["transfer_path"]
    for row in out[1:]:
        assert row["status"] != "ok" and row["reject_reason"] == "no_mouth_donor", row
        assert "closed" in row["reject_detail"] and row["transfer_path"] is None
    # painted_mouths: the two are painted (close_lips) instead, one row at a time as in a batch
    stage = _stage(run, painted_mouths=True)
    painted = stage.process_batch(plan).to_pylist()
    assert [r["transfer_mouth_rule"] for r in painted] == ["donor_mouth", "close_lips", "close_lips"]
    assert stage.process_row(plan.to_pylist()[2])["transfer_mouth_rule"] == "close_lips"
