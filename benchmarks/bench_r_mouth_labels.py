"""The mouth checks on the hand-labelled generated R of tests/fixtures/r_mouths (landmark_warp_v2),
tests/fixtures/r_mouths_v3 (landmark_warp_v3) and tests/fixtures/r_mouths_v4 (landmark_warp_v4): per fixture, the
artificial and fine R rejected by each check and by any, and each score's AUC (artificial vs fine), with the
thresholds a London run calibrates on its real mouths (tests/qc/r_mouth_fixture.py). The labels only measure:
nothing here is fitted on them.

    python -m benchmarks.bench_r_mouth_labels
"""

from __future__ import annotations

import json
import time

import numpy as np

from benchmarks.common import LONDON, auc, load_average, machine
from benchmarks.london_faces import load_london
from pipeline.config import load_config
from qc.decide import DECIDING_CHECKS, applied_threshold, check_passes
from tests.qc.r_mouth_fixture import CHECKS, load, london_calibration, mouth_reasons, scores

FIXTURES = ("r_mouths", "r_mouths_v3", "r_mouths_v4")


def main() -> None:
    qc = load_config().qc
    start = time.perf_counter()
    cal = london_calibration(load_london(LONDON), LONDON, qc)
    print(f"{machine()}; load average {load_average()}; calibration {time.perf_counter() - start:.0f} s")
    t = json.loads(cal.thresholds.to_json())
    checks = [c for c in DECIDING_CHECKS if c.reason in CHECKS]
    for name in FIXTURES:
        rs = load(name)
        y = np.array([r.artificial for r in rs])
        ss = [scores(r, cal) for r in rs]
        reasons = [mouth_reasons(s, cal.thresholds) for s in ss]
        print(f"\n{name}: {y.sum()} artificial, {(~y).sum()} fine")
        print("| check | threshold | AUC (artificial vs fine) | artificial rejected | fine rejected |")
        print("|---|---|---|---|---|")
        for c in checks:
            v = np.array([getattr(s, c.score) if getattr(s, c.score) is not None else np.nan for s in ss], float)
            sign = 1.0 if c.rule == "max" else -1.0
            limit = applied_threshold(c, t)
            fails = np.array([check_passes(c, getattr(s, c.score), limit) is False for s in ss])
            ok = ~np.isnan(v)
            a = auc(sign * v[ok & y], sign * v[ok & ~y]) if (ok & y).any() and (ok & ~y).any() else float("nan")
            shown = "off" if limit is None else f"{limit:.3f}"
            print(f"| {c.score} | {shown} | {a:.2f} | {fails[y].sum()} / {y.sum()} | "
                  f"{fails[~y].sum()} / {(~y).sum()} |")
        anyf = np.array([bool(r) for r in reasons])
        print(f"| any mouth check | | | **{anyf[y].sum()} / {y.sum()}** | **{anyf[~y].sum()} / {(~y).sum()}** |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s; load average {load_average()}")


if __name__ == "__main__":
    main()
