"""What every phase of a run shares: streaming its dataset through the commit stage and consuming the stats rows
(progress, the stage-error abort guard, held stage_error rows), crash isolation of the batch a dead actor was on,
and restarting the phase from the committed manifests when workers are lost."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import ray

from manifests.store import ManifestStore
from pipeline.commit import CommitBuffer, Progress, StageErrorGuard, StageFailureError
from pipeline.commit_stage import HELD_REASONS, CommitSpec, table_from_ipc
from pipeline.config import RayConfig, RunConfig
from pipeline.done import not_done
from pipeline.in_flight import InFlight, lost_workers
from pipeline.isolate import IsolatedActors, Isolation, PoisonIsolatedError, run_alone
from pipeline.ray_adapter import commit_manifests

log = logging.getLogger(__name__)


@dataclass
class PhaseStats:
    todo: int
    skipped_done: int
    seconds: float


@dataclass(frozen=True)
class PhaseSettings:
    """The run settings the phase machinery reads: shard size and age, the abort guard's limits, and how many
    restarts after lost workers no item was found to cause."""

    commit_rows: int  # run.commit_rows
    commit_seconds: float  # run.commit_seconds
    max_stage_error_rate: float  # run.max_stage_error_rate
    min_items_for_abort: int  # run.min_items_for_abort
    max_restarts: int  # ray.max_task_retries

    @classmethod
    def of(cls, run: RunConfig, ray: RayConfig) -> PhaseSettings:
        return cls(run.commit_rows, run.commit_seconds, run.max_stage_error_rate, run.min_items_for_abort,
                   ray.max_task_retries)


@dataclass
class Phase:
    """One phase across its restarts: one abort guard, and the decisions on items run alone (pipeline/isolate.py),
    committed when the phase ends unless the guard stopped it (so a model that kills its worker on every item
    leaves no item decided, as with stage_error); until then its restarts count them as done."""

    settings: PhaseSettings
    guard: StageErrorGuard = field(init=False)
    alone: CommitBuffer | None = None
    restarts: int = 0  # how many times the phase was restarted after lost workers

    def __post_init__(self) -> None:
        self.guard = StageErrorGuard(self.settings.max_stage_error_rate, self.settings.min_items_for_abort)

    def done(self, committed: pa.Array) -> pa.Array:
        """The ids decided: `committed` and those decided alone, not committed yet."""
        if self.alone is None or not self.alone.pending:
            return committed
        ids = [c for t in self.alone.pending for c in t[self.alone.id_column].chunks]
        return pc.unique(pa.concat_arrays([committed.cast(pa.string()), *[c.cast(pa.string()) for c in ids]]))

    def held(self, spec: CommitSpec, store: ManifestStore) -> CommitBuffer:
        """A driver-side buffer for rows the workers hand back (stage_error rows, decisions of items run alone)."""
        return CommitBuffer(store, spec.split, spec.id_column, spec.prefix, self.settings.commit_rows,
                            self.settings.commit_seconds, spec.info)

    def commit_alone(self) -> None:
        if self.alone is not None:
            self.alone.flush()


def _drop_stage_errors(table: pa.Table) -> pa.Table:
    """When aborting, keep stage_error (and worker_crashed) rows out of the manifest so a fixed rerun retries them."""
    return table.filter(pc.fill_null(pc.invert(pc.is_in(table["reject_reason"], value_set=pa.array(HELD_REASONS))),
                                     True))


def _consume(stats: Iterable[pa.Table], held: CommitBuffer, progress: Progress, guard: StageErrorGuard,
             flush: bool = True) -> None:
    """Read the commit stage's stats rows: progress, the abort guard, and the held stage_error rows (committed at
    the end unless `flush` is False)."""
    try:
        for table in stats:
            for row in table.to_pylist():
                progress.update_counts(row["rows"], Counter(json.loads(row["outcomes"])))
                guard.check_counts(row["rows"], row["stage_errors"], row["first_error"])
                if row["held"] is not None:
                    # stage_error rows are committed only once the guard has seen enough items to judge the model
                    held_rows = table_from_ipc(row["held"])
                    held.add(held_rows) if guard.processed >= guard.min_items else held.hold(held_rows)
    except Exception:
        held.flush(keep=_drop_stage_errors)
        raise
    finally:
        progress.close()
    if flush:
        held.flush()


def stream_phase(make_dataset: Callable[[InFlight], object], spec: CommitSpec, store: ManifestStore,
                 progress: Progress, phase: Phase, iso: Isolation) -> None:
    """Run the phase's dataset through the commit stage and consume its stats. When a stage actor dies, the batch
    it was on runs one item at a time (pipeline/isolate.py) before the error goes up to with_phase_retries."""
    in_flight = InFlight.start(spec.id_column)
    try:
        ds = commit_manifests(make_dataset(in_flight), spec, phase.settings.commit_rows)  # type: ignore[arg-type]
        _consume(ds.iter_batches(batch_format="pyarrow", batch_size=None), phase.held(spec, store), progress,
                 phase.guard)
    except Exception as exc:
        batch = in_flight.crashed_batch(exc) if lost_workers(exc) else None
        if batch is not None:
            _run_crashed_batch(batch, exc, spec, store, phase, iso)
        raise


def _run_crashed_batch(batch: tuple[str, list[str]], exc: Exception, spec: CommitSpec, store: ManifestStore,
                       phase: Phase, iso: Isolation) -> None:
    """Decide the undecided items of the batch a stage actor died on one at a time; raise PoisonIsolatedError when
    one of them killed its worker again (else return: the death was not an item's doing)."""
    stage, ids = batch
    todo = iso.undecided(ids)
    log.warning("a %s actor died on a batch of %d items (%s: %s); running the %d undecided ones one at a time",
                stage, len(ids), type(exc).__name__, str(exc).splitlines()[0][:200], len(todo))
    crashed: set[str] = set()
    if todo:
        phase.alone = phase.alone or phase.held(spec, store)
        with IsolatedActors(iso) as actors:
            _consume(run_alone(actors, spec, todo, crashed), phase.alone,
                     Progress(f"{stage}: one item at a time", len(todo)), phase.guard, flush=False)
    if crashed:
        raise PoisonIsolatedError(f"{len(crashed)} item(s) killed their {stage} worker when run alone: "
                                  f"{', '.join(sorted(crashed))}") from exc


# -- retries of a whole phase -----------------------------------------------------------------------

def with_phase_retries(settings: PhaseSettings, name: str, run: Callable[[Phase], PhaseStats],
                       alive_nodes: Callable[[], set[str]] | None = None) -> PhaseStats:
    """Run a phase; when actors, workers or a node die, start the phase again from what is committed.

    Stage actors are created with max_restarts=0 (pipeline/ray_adapter.py): Ray cannot promise to restart an actor
    whose constructor arguments live in the object store (ray-project/ray#53727), and Ray Data passes every
    actor's UDF that way. A fresh dataset gets fresh actors instead; committed shards are never redone and a
    shard is named by its ids, so the result is exactly that of an uninterrupted run. A restart counts against
    ray.max_task_retries (then the error is raised) unless the batch of the dead actor, run one item at a time,
    named items that kill their worker (PoisonIsolatedError): those are decided, so that restart is progress. One
    abort guard spans the phase, so a model that kills its worker on every item stops the job. `alive_nodes`: the
    ids of the cluster's live nodes (default: Ray's node table)."""
    phase = Phase(settings)
    try:
        stats = _restarting(name, run, phase, alive_nodes or alive_node_ids)
    except StageFailureError:
        raise  # nothing run alone is committed: a fixed rerun retries those items
    except Exception:
        phase.commit_alone()
        raise
    phase.commit_alone()
    return stats


def alive_node_ids() -> set[str]:
    """The ids of the nodes Ray's control store holds alive now."""
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def _restarting(name: str, run: Callable[[Phase], PhaseStats], phase: Phase,
                alive_nodes: Callable[[], set[str]]) -> PhaseStats:
    counted, limit = 0, phase.settings.max_restarts  # restarts no dead node excused
    excused: set[str] = set()  # nodes whose death excused a restart (each once)
    while True:
        alive = alive_nodes()
        try:
            return run(phase)
        except Exception as exc:
            if isinstance(exc, StageFailureError) or not lost_workers(exc):  # the guard stopped the phase
                raise
            # A node that died during the attempt explains it: a node's death is seen by Ray's health checks only
            # some seconds later, and the attempts started in between place actors and tasks on the dead node
            # and fail too. Each dead node excuses one restart, so the restarts stay bounded.
            died = alive - alive_nodes() - excused
            excused |= died
            if not died and not isinstance(exc, PoisonIsolatedError):
                counted += 1
                if counted > limit:
                    raise
            cause = f"{len(died)} node(s) died" if died else f"{counted} of {limit} restarts after unattributed losses"
            log.warning("%s: workers lost (%s: %s); restarting the phase from the committed manifests (%s)", name,
                        type(exc).__name__, str(exc).splitlines()[0][:300], cause)
            phase.restarts += 1


def undecided(ids: list[str], done: pa.Array) -> list[str]:
    """The ids not in `done`, in their order."""
    table = not_done(pa.table({"id": pa.array(ids, pa.string())}), "id", done)
    return table["id"].to_pylist()
