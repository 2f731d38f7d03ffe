"""The in-flight registry names the batch a dead actor was on (real Ray actors, one of them exits mid-batch)."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from pipeline.in_flight import InFlight, dead_actor_ids, lost_workers
from pipeline.isolate import crash_row
from stages.base import TRANSIENT_COLUMN


class _Worker:
    """Records each batch like StageActor does; exits on the item named `poison`."""

    def __init__(self, in_flight: InFlight) -> None:
        import ray
        self.in_flight = in_flight
        self.actor_id = ray.get_runtime_context().get_actor_id()

    def process(self, ids: list[str], poison: str) -> int:
        self.in_flight.begin(self.actor_id, "stage_x", ids)
        if poison in ids:
            os._exit(86)
        self.in_flight.end(self.actor_id)
        return len(ids)


def test_the_batch_of_the_dead_actor_is_named_and_finished_batches_are_not(ray_session):
    ray = ray_session
    in_flight = InFlight.start("candidate_id")
    assert InFlight.start("candidate_id").registry._actor_id == in_flight.registry._actor_id  # one per driver job
    worker_cls = ray.remote(num_cpus=0, max_restarts=0)(_Worker)
    good, bad = worker_cls.remote(in_flight), worker_cls.remote(in_flight)
    assert ray.get(good.process.remote(["a", "b"], "p")) == 2  # finished: its entry is cleared
    with pytest.raises(ray.exceptions.ActorDiedError) as info:
        ray.get(bad.process.remote(["c", "p", "d"], "p"))
    assert lost_workers(info.value)
    assert dead_actor_ids(info.value) == [bad._actor_id.hex()]
    assert in_flight.crashed_batch(info.value) == ("stage_x", ["c", "p", "d"])
    assert in_flight.crashed_batch(RuntimeError("no actor named")) is None
    assert not lost_workers(RuntimeError("a bug"))


def test_crash_row_is_a_transient_worker_crashed_reject_of_that_stage():
    rows = pa.table({"candidate_id": ["x"], "status": ["ok"], "attempt": pa.array([2], pa.int32())})
    out = crash_row(rows, "identity_swap", 2, 3, RuntimeError("The actor died unexpectedly.\nmore"))
    row = out.to_pylist()[0]
    assert row["status"] == "rejected" and row["reject_stage"] == "identity_swap"
    assert row["reject_reason"] == "worker_crashed" and row[TRANSIENT_COLUMN] is True
    assert row["reject_detail"] == ("the worker process died while stage identity_swap processed this item alone "
                                    "(attempt 2 of 3): RuntimeError: The actor died unexpectedly.")
    assert row["attempt"] == 2 and out.num_rows == 1
