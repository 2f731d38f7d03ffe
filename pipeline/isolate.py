"""Poison items: the batch a stage actor died on, run one item at a time, so that a crash names its item.

A stage actor that dies fails the phase's dataset (pipeline/phases.py), and pipeline/in_flight.py names the batch
it was on. Each item of that batch that is not decided yet then runs alone through the phase's stages, each stage
in a plain actor (max_restarts=0) that has loaded its models before it gets the item. An actor that dies while it
processes one item was killed by that item. Such a failure is transient (stages/errors.py), counted like any
other: on attempt a < run.max_attempts it is an `attempts` row (pipeline/retry.py) and the item runs alone again,
in the same run, as attempt a + 1; on attempt max_attempts it is decided: a `worker_crashed` reject
(transient = true, attempt = max_attempts) at the stage it crashed in, passed through the later stages like any
rejected row. The other items are decided exactly as in the stream. Every result is committed by
pipeline/commit_stage.py `commit_batch`; the caller consumes its stats rows (abort guard, held rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import pyarrow as pa
import ray

from pipeline.commit_stage import WORKER_CRASHED, CommitSpec, commit_batch
from pipeline.in_flight import lost_workers
from pipeline.ray_adapter import StageChain, named_actor_class
from pipeline.retry import ATTEMPT_COLUMN, with_attempt_column
from stages.base import STATUS_REJECTED, TRANSIENT_COLUMN

log = logging.getLogger(__name__)


class PoisonIsolatedError(RuntimeError):
    """A phase failed because an actor died; run alone, items of its batch killed their worker again (each is now
    an `attempts` row or a `worker_crashed` reject), so restarting the phase is progress, not a retry."""


@dataclass(frozen=True)
class Isolation:
    """What running a phase's items one at a time needs, besides its commit spec."""

    chain: StageChain  # the phase's stages and what their actors are built from
    rows_of: Callable[[list[str]], pa.Table]  # the first stage's input rows of these ids, with their attempt
    undecided: Callable[[list[str]], list[str]]  # those of these ids the phase has not decided yet


@dataclass
class IsolatedActors:
    """One plain actor per stage, started (and waited for) on first use, dropped when it dies."""

    iso: Isolation
    actors: dict[int, Any] = field(default_factory=dict)  # stage index -> its actor (a Ray ActorHandle)

    def get(self, k: int) -> Any:
        if k not in self.actors:
            chain = self.iso.chain
            cls, section = chain.classes[k], chain.sections[k]
            actor: Any = ray.remote(named_actor_class(cls)).options(
                num_cpus=section.resources.num_cpus, num_gpus=section.resources.num_gpus, max_restarts=0,
                max_task_retries=0,
            ).remote(cls, section, chain.context)
            ray.get(actor.ready.remote())  # a constructor that dies is not the item's doing: raised as it is
            self.actors[k] = actor
        return self.actors[k]

    def drop(self, k: int) -> None:
        actor = self.actors.pop(k, None)
        if actor is not None:
            ray.kill(actor)

    def __enter__(self) -> IsolatedActors:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for k in list(self.actors):
            self.drop(k)


def run_alone(actors: IsolatedActors, spec: CommitSpec, ids: list[str], crashed: set[str]) -> Iterator[pa.Table]:
    """Decide each item of `ids` alone and commit it; yields commit_batch's stats rows. Adds to `crashed` the ids
    whose worker died while it ran alone."""
    max_attempts = spec.max_attempts or 1
    items = actors.iso.rows_of(ids)
    for k in range(items.num_rows):
        item = items.slice(k, 1)
        item_id = item[spec.id_column][0].as_py()
        attempt = (item[ATTEMPT_COLUMN][0].as_py() or 1) if ATTEMPT_COLUMN in item.column_names else 1
        while True:
            rows, crash = _through(actors, 0, with_attempt_column(item, pa.array([attempt], pa.int32())))
            # its own shard per attempt: a shard is named by its ids, and the next attempt must not overwrite this one
            alone = replace(spec, prefix=f"{spec.prefix}alone-a{attempt}-")
            if crash is None:
                yield commit_batch(rows, alone)
                break
            crashed.add(item_id)
            stage_index, error = crash
            stage = actors.iso.chain.classes[stage_index].name
            log.warning("%s killed the worker of stage %s alone (attempt %d of %d)", item_id, stage, attempt,
                        max_attempts)
            marked = crash_row(rows, stage, attempt, max_attempts, error)
            rows, again = _through(actors, stage_index, marked)  # a rejected row is passed through, not processed
            if again is not None:
                raise RuntimeError(f"stage {actors.iso.chain.classes[again[0]].name} died passing a rejected row "
                                   f"through") from again[1]
            yield commit_batch(rows, alone)  # an attempts row, or (held) the decision on the last attempt
            if attempt >= max_attempts:
                break
            attempt += 1


def _through(actors: IsolatedActors, first: int, rows: pa.Table) -> tuple[pa.Table, tuple[int, Exception] | None]:
    """`rows` through stages first.. (each in its actor); on a dead actor: its input and (stage index, error)."""
    for k in range(first, len(actors.iso.chain.classes)):
        actor = actors.get(k)
        try:
            out: pa.Table = ray.get(actor.process.remote(rows))
        except Exception as exc:
            if not lost_workers(exc):
                raise
            actors.drop(k)
            return rows, (k, exc)
        rows = out
    return rows, None


def crash_row(rows: pa.Table, stage: str, attempt: int, max_attempts: int, error: BaseException) -> pa.Table:
    """The input row of the stage whose worker died on it, as a transient `worker_crashed` reject of that stage."""
    detail = (f"the worker process died while stage {stage} processed this item alone (attempt {attempt} of "
              f"{max_attempts}): {type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
    values: dict[str, tuple[object, pa.DataType]] = {
        "status": (STATUS_REJECTED, pa.string()), "reject_stage": (stage, pa.string()),
        "reject_reason": (WORKER_CRASHED, pa.string()), "reject_detail": (detail[:2000], pa.string()),
        TRANSIENT_COLUMN: (True, pa.bool_())}
    for name, (value, kind) in values.items():
        column = pa.array([value] * rows.num_rows, kind)
        i = rows.schema.get_field_index(name)
        rows = rows.set_column(i, name, column) if i >= 0 else rows.append_column(name, column)
    return rows
