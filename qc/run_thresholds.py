"""The thresholds QC applies to a run: config values, with the parts left to calibration fitted on the run's
sources (identity: qc/identity_calibration.py; mouth: qc/mouth_calibration.py, on the sources' real mouths;
expression classes: qc/expression_calibration.py via the sample of qc/selftest.py). Deterministic in the sources,
so the QC actors, `ciep qc redecide`, run.json and the self-test all get the same thresholds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from manifests.store import ManifestStore
from qc.config import QCConfig
from qc.decide import Thresholds
from qc.expression_calibration import ExpressionCalibration, balanced_means, photo_features
from qc.identity_calibration import IdentityCalibration, resolve_thresholds
from qc.mouth_calibration import MouthCalibration, calibrate_mouth, source_columns, store_reader
from qc.selftest import SELFTEST_COLUMNS, calibrate_expression, sources_arrays, with_expression_calibration

RUN_THRESHOLD_COLUMNS = tuple(dict.fromkeys(("identity", "embedding", *SELFTEST_COLUMNS, *source_columns())))


@dataclass(frozen=True)
class RunThresholds:
    thresholds: Thresholds
    identity: IdentityCalibration | None
    expression: ExpressionCalibration | None
    mouth: MouthCalibration | None = None

    def mouth_record(self) -> dict | None:
        """What run.json keeps of the mouth calibration (flag rates on the run's real mouths)."""
        return self.mouth.record if self.mouth is not None else None


def resolve_run_thresholds(qc: QCConfig, sources: pa.Table,
                           read: Callable[[str], np.ndarray] | None = None) -> RunThresholds:
    """`sources` needs RUN_THRESHOLD_COLUMNS (the expression calibration is skipped when it lacks them); the mouth
    thresholds are calibrated on the sources' real mouths when `read` (aligned image URL -> RGB) is given."""
    thresholds, identity = resolve_thresholds(qc, sources)
    mouth = None
    if read is not None:
        mouth = calibrate_mouth(qc, thresholds, sources, read)
        thresholds = mouth.thresholds
    expression = None
    if qc.expression.calibrate and set(SELFTEST_COLUMNS) <= set(sources.column_names):
        expression = calibrate_expression(qc, sources)[0]
        if expression.classes:  # no source with a label and the net's output (a synthetic run): nothing to apply
            thresholds = with_expression_calibration(thresholds, expression, qc.expression.judge_unjudgeable)
        else:
            expression = None
    return RunThresholds(thresholds, identity, expression, mouth)


def resolve_for_store(qc: QCConfig, store: ManifestStore) -> RunThresholds:
    """resolve_run_thresholds on a run's committed sources, reading its stored images (the driver's callers:
    re-decisions, run.json, the self-test)."""
    sources = store.read_table("sources", list(RUN_THRESHOLD_COLUMNS))
    return resolve_run_thresholds(qc, sources, store_reader(store))


def identity_expression_means(sources: pa.Table) -> dict[str, np.ndarray]:
    """identity -> class-balanced mean of its photos' expression features (what a generated R of that identity is
    taken relative to)."""
    if not sources.num_rows or not set(SELFTEST_COLUMNS) <= set(sources.column_names):
        return {}
    ident, labels, probs, desc = sources_arrays(sources)
    return balanced_means(ident, labels, photo_features(probs, desc)) if len(ident) else {}
