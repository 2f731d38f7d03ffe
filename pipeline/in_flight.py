"""Which batch each stage actor is working on, so that the batch a dead actor was on can be named.

Stage actors report each batch's ids to one small registry actor (one per driver job, shared by its phases)
before they process it and clear the entry after (pipeline/ray_adapter.py StageActor). When an actor dies, Ray
Data fails the phase with an ActorDiedError naming that actor; its entry is still open and holds the crashed
batch: the only items that can have killed it. pipeline/isolate.py then runs those items one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray


def lost_workers(exc: BaseException) -> bool:
    """True if the failure is a dead actor/worker/node or a lost object (not a bug in our code or data)."""
    import ray.exceptions as rex
    lost = (rex.ActorDiedError, rex.ActorUnavailableError, rex.ObjectLostError, rex.NodeDiedError,
            rex.WorkerCrashedError, rex.OwnerDiedError, rex.OutOfMemoryError)
    return any(isinstance(e, lost) or (isinstance(e, rex.RayActorError) and not isinstance(e, rex.RayTaskError))
               for e in _chain(exc))


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and the causes Ray's task errors carry."""
    import ray.exceptions as rex
    seen: dict[int, BaseException] = {}
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen[id(e)] = e
        if isinstance(e, rex.RayTaskError):
            stack.append(getattr(e, "cause", None))
        stack.extend([e.__cause__, e.__context__])
    return list(seen.values())


def dead_actor_ids(exc: BaseException) -> list[str]:
    """The ids (hex) of the actors whose death `exc` reports."""
    import ray.exceptions as rex
    return [e.actor_id for e in _chain(exc) if isinstance(e, rex.ActorDiedError) and e.actor_id]


@ray.remote(num_cpus=0, max_restarts=0)
class _Registry:
    """actor id -> (stage, ids) of the batch it is processing now (one at a time: Ray Data runs a sync UDF one call
    per actor at a time)."""

    def __init__(self) -> None:
        self.open: dict[str, tuple[str, list[str]]] = {}

    def begin(self, actor_id: str, stage: str, ids: list[str]) -> None:
        self.open[actor_id] = (stage, ids)

    def end(self, actor_id: str) -> None:
        self.open.pop(actor_id, None)

    def batch_of(self, actor_id: str) -> tuple[str, list[str]] | None:
        return self.open.get(actor_id)

    def ping(self) -> bool:
        return True


# One registry per driver job, shared by its phases: a new actor per phase put a worker start on every phase's
# critical path (the first batch waits for `begin`). Entries are keyed by actor id, so phases never mix.
_REGISTRIES: dict[str, Any] = {}


@dataclass(frozen=True)
class InFlight:
    """The registry of one phase (a small handle: stage actors receive it in their constructor arguments)."""

    registry: ray.actor.ActorHandle
    id_column: str  # the work items' id: input_key (ingest) or candidate_id (generation)

    @staticmethod
    def start(id_column: str) -> InFlight:
        """The driver job's registry (started on first use, and again if it died with its node)."""
        context = ray.get_runtime_context()
        job = f"{context.gcs_address}/{context.get_job_id()}"  # job ids repeat across Ray sessions of a process
        registry = _REGISTRIES.get(job)
        if registry is not None:
            try:
                ray.get(registry.ping.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - dead with its node, or a handle of an earlier Ray session
                registry = None
        if registry is None:
            registry = _REGISTRIES[job] = _Registry.remote()  # type: ignore[attr-defined]  # a @ray.remote class
        return InFlight(registry, id_column)

    def begin(self, actor_id: str, stage: str, ids: list[str]) -> None:
        """Record the batch before it is processed (waits, so the entry exists if the process dies next)."""
        ray.get(self.registry.begin.remote(actor_id, stage, ids))

    def end(self, actor_id: str) -> None:
        self.registry.end.remote(actor_id)  # ordered after this actor's begin; nothing to wait for

    def crashed_batch(self, exc: BaseException) -> tuple[str, list[str]] | None:
        """(stage, ids) of the batch the actor named in `exc` died on; None when no such batch is recorded
        (a task or node died, or an actor died outside a batch: in its constructor, between batches)."""
        import ray.exceptions as rex
        for actor_id in dead_actor_ids(exc):
            try:
                batch: Any = ray.get(self.registry.batch_of.remote(actor_id))  # (stage, ids) or None
            except rex.RayError:  # the registry went with its node: nothing to attribute
                return None
            if batch is not None:
                return batch[0], list(batch[1])
        return None
