"""The stage contract: declared resources, a once-per-actor setup, and process_batch(pa.Table) -> pa.Table.

Stages never import Ray; pipeline/ray_adapter.py turns a stage into a Ray Data actor pool.
Rows carry their own status: a row rejected upstream passes through untouched, and an exception
on one row becomes a `stage_error` reject on that row instead of a failed batch.
"""

from __future__ import annotations

import logging
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pyarrow as pa

from core.config import StageResources
from core.faults import FaultInjectionConfig, maybe_inject
from core.location import Location
from stages.config import IdentityModelConfig, IngestConfig, ModelsConfig
from stages.errors import is_transient

log = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_REJECTED = "rejected"
# Columns every row carries between the generation stages.
STATUS_COLUMNS = ("status", "reject_stage", "reject_reason", "reject_detail")
# True on a stage_error row whose exception is transient (stages/errors.py): a rerun retries the item.
TRANSIENT_COLUMN = "error_transient"


class RowRejected(Exception):
    """Raised inside process_row to reject one item with a reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class StageSection(Protocol):
    """A stage's own config section: a Strict model with the stage's Ray resources."""

    @property
    def resources(self) -> StageResources: ...


@dataclass(frozen=True)
class StageContext:
    """What every stage of one run shares, besides its own config section (built by the driver)."""

    run: Location  # the run folder: images and manifests are written under it
    run_id: str
    fingerprint: str  # the data fingerprint (ids hash it)
    ingest: IngestConfig  # the ingest section: the face detector every stage uses
    models: ModelsConfig = field(default_factory=ModelsConfig)  # where ONNX model files come from
    identity_model: IdentityModelConfig = field(default_factory=IdentityModelConfig)  # qc.identity, ingest's too
    corpus: Location | None = None  # the corpus root, whose options read the corpus files (None: no options)
    fault: FaultInjectionConfig | None = None  # testing hook only (core/faults.py)


class Stage(ABC):
    """One step of the IDI DAG. Subclasses set `name` and implement setup() and process_batch().

    A stage gets its own config section (`config_section` names it in the run config) and the run's context."""

    name: ClassVar[str]
    config_section: ClassVar[str]
    # Columns this stage needs on its input rows and columns it adds; checked before the DAG runs.
    input_columns: ClassVar[tuple[str, ...]] = ()
    output_fields: ClassVar[tuple[pa.Field, ...]] = ()

    @property
    def output_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.output_fields)

    def __init__(self, config: Any, context: StageContext) -> None:
        self.config = config  # this stage's section (a Strict model)
        self.context = context

    @property
    def run_root(self) -> str:
        return self.context.run.url

    @property
    def resources(self) -> StageResources:
        resources: StageResources = self.config.resources
        return resources

    def setup(self) -> None:  # noqa: B027 - an optional hook: most stages load models here, some need nothing
        """Load models; called once per actor, before the first batch."""

    @abstractmethod
    def process_batch(self, batch: pa.Table) -> pa.Table: ...


class RowwiseStage(Stage):
    """A stage that handles one row at a time; rejects and exceptions become status columns."""

    @abstractmethod
    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """Return the new column values for an ok row; raise RowRejected to reject it."""

    def empty_outputs(self) -> dict[str, Any]:
        """Column values for a row this stage did not process (rejected upstream or here)."""
        return {c: None for c in self.output_columns}

    def process_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """Outputs for a list of ok rows, an Exception in place of a failed row.

        Batched backends override this to run the model once per batch."""
        out: list[dict[str, Any] | Exception] = []
        for row in rows:
            try:
                out.append(self.process_row(row))
            except Exception as exc:  # noqa: BLE001 - recorded as the row's reject reason
                out.append(exc)
        return out

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        ok = [r for r in rows if r.get("status") in (None, STATUS_OK)]
        fault = self.context.fault
        if fault is not None:  # testing hook only (core/faults.py; `at` may be a glob over stage names)
            ok = [r for r in ok if not self._inject_fault(fault, r)]
        results = self.process_rows(ok) if ok else []
        for row, result in zip(ok, results, strict=False):
            if isinstance(result, Exception):
                self._reject(row, result)
            else:
                row.update(result)
                row["status"] = STATUS_OK
        for row in rows:
            if row.get("status") not in (None, STATUS_OK):
                for c in self.output_columns:
                    row.setdefault(c, None)
        return rows_to_table(rows, batch.schema, self.output_schema())

    def _inject_fault(self, fault: FaultInjectionConfig, row: dict[str, Any]) -> bool:
        """Run the configured test fault for this row; True if it raised (the row is then a stage_error)."""
        try:
            maybe_inject(fault, self.name, row.get("candidate_id") or row.get("input_key"), row.get("attempt"))
        except Exception as exc:  # noqa: BLE001 - exactly what a model raising on this row would give
            self._reject(row, exc)
            return True
        return False

    def _reject(self, row: dict[str, Any], exc: Exception) -> None:
        row.update(self.empty_outputs())
        if isinstance(exc, RowRejected):
            row.update({"status": STATUS_REJECTED, "reject_stage": self.name, "reject_reason": exc.reason,
                        "reject_detail": exc.detail[:2000], TRANSIENT_COLUMN: False})
        else:
            log.warning("stage %s failed on one item: %s: %s", self.name, type(exc).__name__, exc)
            row.update(stage_error(self.name, exc))

    def output_schema(self) -> pa.Schema:
        return pa.schema(list(self.output_fields))


def stage_error(stage: str, exc: BaseException) -> dict[str, Any]:
    """The status columns of a row that `stage` failed on with `exc`: a `stage_error` reject, transient or not
    (stages/errors.py), its detail the exception and the end of its traceback."""
    detail = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc, limit=3))
    return {"status": STATUS_REJECTED, "reject_stage": stage, "reject_reason": "stage_error",
            "reject_detail": detail[:2000], TRANSIENT_COLUMN: is_transient(exc)}


def rows_to_table(rows: list[dict[str, Any]], input_schema: pa.Schema, added: pa.Schema) -> pa.Table:
    """Build a table with the input schema plus the added fields, in a stable column order."""
    fields = list(input_schema)
    names = {f.name for f in fields}
    for f in added:
        if f.name not in names:
            fields.append(f)
            names.add(f.name)
    for c, t in (("status", pa.string()), ("reject_stage", pa.string()), ("reject_reason", pa.string()),
                 ("reject_detail", pa.string()), (TRANSIENT_COLUMN, pa.bool_())):
        if c not in names:
            fields.append(pa.field(c, t))
    schema = pa.schema(fields)
    for r in rows:
        r.setdefault("status", STATUS_OK)
    return pa.Table.from_pylist(rows, schema=schema)


def make_stage(stage_cls: type[Stage], config: StageSection, context: StageContext) -> Stage:
    stage = stage_cls(config, context)
    stage.setup()
    return stage
