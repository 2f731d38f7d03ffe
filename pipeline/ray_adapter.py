"""The only place that knows Ray: start or join a cluster, and turn a Stage into an actor pool."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray
import ray.data

from core.config import StageResources
from core.location import Location
from pipeline.commit import PROGRESS_BARS_ENV
from pipeline.commit_stage import CommitSpec, commit_batch
from pipeline.config import PipelineConfig, RayConfig
from pipeline.in_flight import InFlight
from pipeline.lazy_datasource import LazyDatasource, TableDatasource
from pipeline.planning.datasource import PlanFilesDatasource, PlanReads, plan_file_runs
from pipeline.planning.gather import read_plan_rows
from pipeline.planning.ray_features import Features
from stages.base import Stage, StageContext, StageSection, make_stage

log = logging.getLogger(__name__)



def init_ray(cfg: RayConfig) -> None:
    """Join the configured cluster, the one `ray job submit` put us on, or start a local one."""
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        # address="local" always starts a fresh local Ray, never a stale one recorded in /tmp/ray.
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    # The driver draws one bar per phase (pipeline/commit.py Progress); Ray Data's per-operator bars are shown too
    # with CIEP_PROGRESS_BARS=ray.
    ctx.enable_progress_bars = os.environ.get(PROGRESS_BARS_ENV, "0") == "ray"
    log.info("Ray cluster resources: %s", ray.cluster_resources())


def pool_size(res: StageResources, stages_sharing: int, reserve_cpus: float) -> int:
    """Max actors for a stage so that all stages of a phase plus Ray Data's own tasks fit the cluster."""
    if res.concurrency != "auto":
        return int(res.concurrency)
    resources = ray.cluster_resources()
    if res.num_gpus > 0:
        return max(1, int(resources.get("GPU", 0) // res.num_gpus))
    free_cpus = max(resources.get("CPU", 1.0) - reserve_cpus, res.num_cpus)
    return max(1, int(free_cpus // (res.num_cpus * stages_sharing)))


# Benchmarks set this (before Ray starts, so actors inherit it) to get one JSON line per batch per actor:
# {"stage", "pid", "start", "end", "rows"} (wall-clock seconds) in <dir>/<stage>-<pid>.jsonl.
STAGE_STATS_ENV = "CIEP_STAGE_STATS_DIR"


class StageActor:
    """A Ray Data callable class: builds its stage (and loads its models) once per actor. With `in_flight` it
    records each batch's ids while it processes them (pipeline/in_flight.py)."""

    def __init__(self, stage_cls: type[Stage], section: StageSection, context: StageContext,
                 in_flight: InFlight | None = None) -> None:
        logging.basicConfig(level=logging.WARNING)
        self.stage = make_stage(stage_cls, section, context)
        self.in_flight = in_flight
        self.actor_id = ray.get_runtime_context().get_actor_id() if in_flight is not None else None
        stats_dir = os.environ.get(STAGE_STATS_ENV)
        self._stats_path = os.path.join(stats_dir, f"{stage_cls.name}-{os.getpid()}.jsonl") if stats_dir else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.in_flight is None or self.actor_id is None:
            return self._process(batch)
        self.in_flight.begin(self.actor_id, self.stage.name, batch.column(self.in_flight.id_column).to_pylist())
        out = self._process(batch)
        self.in_flight.end(self.actor_id)
        return out

    def process(self, batch: pa.Table) -> pa.Table:
        """The batch through the stage (the method pipeline/isolate.py calls on a plain actor)."""
        return self._process(batch)

    def ready(self) -> bool:
        """Returns once the constructor (model loading) has finished."""
        return True

    def _process(self, batch: pa.Table) -> pa.Table:
        if self._stats_path is None:
            return self.stage.process_batch(batch)
        start = time.time()
        out = self.stage.process_batch(batch)
        with open(self._stats_path, "a") as fh:
            fh.write(json.dumps(dict(stage=self.stage.name, pid=os.getpid(), start=start, end=time.time(),
                                     rows=batch.num_rows)) + "\n")
        return out


@dataclass(frozen=True)
class StageChain:
    """A phase's stages in order and what their actors are built from: each stage's own config section, the run's
    StageContext, and the CPUs that sizing the pools leaves to Ray Data's own tasks (ray.reserve_cpus)."""

    classes: tuple[type[Stage], ...]
    sections: tuple[StageSection, ...]  # sections[k]: the section of classes[k] (its `config_section`)
    context: StageContext
    reserve_cpus: float


def stage_chain(config: PipelineConfig, classes: Sequence[type[Stage]], run: Location) -> StageChain:
    """These stages in this run: their sections, and what every stage of the run shares (the run folder with
    run.storage_options, ids, the ingest section's detector, models, qc.identity's embedder, the corpus with
    corpus.storage_options, test hook). The one place where the run config meets the stage actors."""
    context = StageContext(run=run, run_id=config.resolved_run_id(), fingerprint=config.data_fingerprint(),
                           ingest=config.ingest, models=config.models, identity_model=config.qc.identity,
                           corpus=config.corpus.location, fault=config.run.fault_injection)
    sections: tuple[StageSection, ...] = tuple(getattr(config, cls.config_section) for cls in classes)
    return StageChain(tuple(classes), sections, context, config.ray.reserve_cpus)


def check_wiring(stage_classes: list[type[Stage]], columns: list[str]) -> None:
    """Fail before running if a stage needs a column that nothing upstream produces."""
    available = set(columns)
    for cls in stage_classes:
        missing = [c for c in cls.input_columns if c not in available]
        if missing:
            raise ValueError(f"stage {cls.name} needs columns {missing} that no earlier stage produces")
        available.update(f.name for f in cls.output_fields)


def apply_stages(ds: ray.data.Dataset, chain: StageChain, in_flight: InFlight | None = None) -> ray.data.Dataset:
    """Chain the stages as streaming map_batches over actor pools (`in_flight`: where the actors record the batch
    they are on)."""
    for cls, section in zip(chain.classes, chain.sections, strict=True):
        res: StageResources = section.resources
        size = pool_size(res, len(chain.classes), chain.reserve_cpus)
        log.info("stage %s: %d actor(s) x %.2f CPU, %.2f GPU, batch %d", cls.name, size, res.num_cpus,
                 res.num_gpus, res.batch_size)
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for max_restarts yet; **ray_remote_args is the documented way and
            # works through the pinned version (the deprecation names Ray 2.64).
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            ds = _map_stage(ds, cls, section, size, chain.context, in_flight)
    return ds


def named_actor_class(stage_cls: type[Stage]) -> type[StageActor]:
    """A StageActor subclass named after the stage, so Ray Data shows `MapBatches(<stage name>)`."""
    return type(stage_cls.name, (StageActor,), {"__module__": __name__, "__qualname__": stage_cls.name})


def _map_stage(ds: ray.data.Dataset, cls: type[Stage], section: StageSection, size: int, context: StageContext,
               in_flight: InFlight | None) -> ray.data.Dataset:
    res = section.resources
    return ds.map_batches(
        named_actor_class(cls),
        fn_constructor_args=(cls, section, context, in_flight),
        batch_size=res.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size),
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus or None,
        # No actor restarts: Ray cannot promise to restart an actor whose constructor arguments are in the object
        # store (ray-project/ray#53727), and Ray Data passes every actor's UDF that way. A dead actor (crash,
        # OOM kill, lost node) fails the dataset instead; pipeline/phases.py runs the batch it was on one item at
        # a time (pipeline/isolate.py), then starts the phase again from the committed manifests.
        max_restarts=0,
    )


# Commit tasks mostly wait on storage; a small CPU share keeps them from competing with the stage actors.
COMMIT_TASK_CPUS = 0.25
PLAN_READ_CPUS = 0.25


def commit_manifests(ds: ray.data.Dataset, spec: CommitSpec, rows: int) -> ray.data.Dataset:
    """The phase's last stage: each task commits `rows` result rows as one shard and yields one stats row."""
    # fn_kwargs, not functools.partial: Ray Data names the operator after the function (MapBatches(commit_batch)).
    return ds.map_batches(commit_batch, fn_kwargs={"spec": spec},  # type: ignore[arg-type]  # kwargs via fn_kwargs
                          batch_size=rows, batch_format="pyarrow", num_cpus=COMMIT_TASK_CPUS)


def plan_rows_of(urls: list[str], ids: list[str], run: Location, failure: str,
                 features: Features | None = None, reads: PlanReads | None = None) -> pa.Table:
    """The plan rows (PLAN_SCHEMA + attempt) of these candidate ids, read from the round's plan files and gathered
    in a task next to the features table, as dataset_from_plan_files gives them to the first stage (`reads`: the
    round's ReadAhead, told that every file is asked for)."""
    if reads is not None and urls:
        reads.reading(len(urls) - 1)
    task = ray.remote(num_cpus=PLAN_READ_CPUS)(read_plan_rows)
    return ray.get(task.remote(urls, run, failure, features, ids))


def dataset_from_plan_files(urls: list[str], failure: str, run: Location, features: Features | None = None,
                            reads: PlanReads | None = None) -> ray.data.Dataset:
    """The round's plan files (local paths or fsspec URLs) as a dataset of one block per read task (a file, or a
    run of files: planning/datasource.py plan_file_runs); a read task waits for its files while the driver is
    still writing later ones (pipeline/planning/files.py). With `features` (the
    object-store blocks of pipeline/planning/ray_features.py, FeatureBlocks) the files hold PLAN_INDEX_SCHEMA
    rows and the read task gathers their PLAN_SCHEMA columns; without, they hold PLAN_SCHEMA rows. With `reads`, a
    read task reports the file it asks for, so that the planner writes only a few files ahead (ReadAhead).

    Not ray.data.read_parquet: the files do not all exist yet, and its file-listing task asks for a whole CPU,
    which a small cluster whose CPUs the stage actors already hold never frees (the round then hangs). Not
    ray.data.from_arrow of the file names either: it runs one metadata task per file before the dataset exists
    (pipeline/planning/datasource.py)."""
    return _lazy_dataset(PlanFilesDatasource(urls, failure, run, features, reads), len(plan_file_runs(len(urls))))


# Ingest's read tasks (pipeline/lazy_datasource.py TableDatasource): one per block up to this many blocks, then
# runs of consecutive blocks, so that Ray Data's start (it stores every read task, ~1-5 ms each here) stays short...
TABLE_READ_TASKS = 1024
# ... and runs of at most this many blocks, so that the actors still share a large table in thousands of blocks.
TABLE_BLOCKS_PER_READ = 128


def table_read_tasks(blocks: int) -> int:
    """How many read tasks dataset_from_table makes for a table of `blocks` blocks."""
    return -(-blocks // min(TABLE_BLOCKS_PER_READ, max(1, -(-blocks // TABLE_READ_TASKS))))


def dataset_from_table(table: pa.Table, rows_per_block: int) -> ray.data.Dataset:
    """A dataset of small blocks in table order, so that the first stage can start before the whole input is read
    and its actors share the input. Not `ray.data.from_arrow` of the blocks: it runs one metadata task per block
    before the dataset exists (pipeline/lazy_datasource.py TableDatasource).

    Ray Data joins the blocks one read task yields into one block, so a table of up to TABLE_READ_TASKS blocks
    keeps blocks of `rows_per_block` rows (one task each); a larger one has about TABLE_READ_TASKS blocks of up to
    TABLE_BLOCKS_PER_READ times that (the actors still take `batch_size` rows at a time). Rows are in table order
    within a block; the tasks start in table order and, as with the plan files, may finish out of it."""
    source = TableDatasource(table, rows_per_block)
    return _lazy_dataset(source, table_read_tasks(source.num_blocks()))


def _lazy_dataset(source: LazyDatasource, read_tasks: int) -> ray.data.Dataset:
    """The datasource's dataset in `read_tasks` small-CPU read tasks (a whole CPU each would wait for ever on a
    cluster whose CPUs the stage actors hold)."""
    return ray.data.read_datasource(source, override_num_blocks=max(1, read_tasks), num_cpus=PLAN_READ_CPUS)
