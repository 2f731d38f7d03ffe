"""The run's QC self-test: real pseudo-triples from the run's own sources, judged by the code that judges R.

After ingest and before generation, T and S are photos of identity i and R is a *real* photo of another identity
j with a known expression label (the corpus's, else the expression net's). Every R photo of a bounded,
deterministic sample of identities is judged once per expression class e, against a T of class e from another
identity and that T's S (i's most different photo), through `qc.decide.failed_checks` with the run's thresholds:
R's calibrated class score is its out-of-sample (leave-one-identity-out) log-odds, so every figure is out of
sample. Per class of T: the pass rate of right-expression R (label e), of wrong-expression R (any other label),
the AUC of the class score, with 95 % Wilson intervals. The figures are the run's promise; a class the run cannot
certify is named unjudgeable (qc/expression_calibration.py) and its targets are not planned.

Rows go to the `qc_selftest` table (one per check, class and measure); `validity_card` is what run.json keeps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from qc.config import QCConfig
from qc.decide import (
    REASON_EXPRESSION_LOST,
    REASON_EXPRESSION_MISMATCH,
    REASON_EXPRESSION_NEARER_S,
    REASON_EXPRESSION_NOT_RECOGNISED,
    REASON_EXPRESSION_UNJUDGEABLE,
    Scores,
    Thresholds,
    failed_checks,
)
from qc.expression_calibration import ExpressionCalibration, fit_with_evidence
from qc.expression_score import expression_contrast, total_variation
from stages.face.expression import DESCRIPTOR_NAMES, expression_distance
from stages.face.expression_net import EXPRESSION_CLASSES, labels_or_predicted

SELFTEST_COLUMNS = ("identity", "expression", "expression_probs", "expression_descriptor")
EXPRESSION_REASONS = {REASON_EXPRESSION_LOST, REASON_EXPRESSION_MISMATCH, REASON_EXPRESSION_NEARER_S,
                      REASON_EXPRESSION_NOT_RECOGNISED, REASON_EXPRESSION_UNJUDGEABLE}
Z95 = 1.959964


def wilson_interval(passed: int, n: int) -> tuple[float | None, float | None]:
    """95 % Wilson score interval of a pass rate; (None, None) without trials."""
    if n == 0:
        return None, None
    p = passed / n
    denom = 1 + Z95 ** 2 / n
    mid = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * np.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return float(max(0.0, mid - half)), float(min(1.0, mid + half))


def rank_auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """P(score of a right-expression R > a wrong one), ties half; None when either side is empty."""
    if not len(pos) or not len(neg):
        return None
    both = np.concatenate([pos, neg])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for v in np.unique(both):  # average ranks of ties
        tied = both == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def sample_identities(identities: np.ndarray, max_identities: int) -> np.ndarray:
    """Boolean mask of the photos of at most max_identities identities, chosen by a hash of their names (the
    same sample for the same corpus, whatever its order)."""
    names = sorted(set(identities.tolist()), key=lambda x: hashlib.sha256(x.encode()).hexdigest())
    return np.isin(identities, np.asarray(names[:max_identities], dtype=object))


@dataclass(frozen=True)
class SelfTest:
    calibration: ExpressionCalibration
    classes: list[dict]  # one per expression class, the figures of the validity card
    sample: dict

    def card(self) -> dict:
        """The validity card (run.json `selftest`)."""
        judged = [c["class"] for c in self.classes if c["judged"]]
        return dict(expression=dict(classes=self.classes, judged=judged,
                                    unjudgeable=[c["class"] for c in self.classes if not c["judged"]],
                                    max_false_pass=self.calibration.max_false_pass,
                                    covers=(f"wrong-expression figures cover the classes of this corpus only "
                                            f"({', '.join(c['class'] for c in self.classes)}): an expression the "
                                            "corpus never shows is not measured"),
                                    min_class_recall=self.calibration.min_class_recall,
                                    calibration_sha256=self.calibration.sha256()),
                    sample=self.sample)


def sources_arrays(sources: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """identity, label, net probabilities and landmark descriptor of the sources that have all of them (a source
    without the net's output or a descriptor, e.g. of a synthetic run, is left out)."""
    probs_list = sources.column("expression_probs").to_pylist()
    desc_list = sources.column("expression_descriptor").to_pylist()
    labels = labels_or_predicted(sources.column("expression").to_pylist(), probs_list)
    keep = [k for k, (p, d, lab) in enumerate(zip(probs_list, desc_list, labels, strict=True))
            if p and d and lab is not None]
    ident = np.asarray(sources.column("identity").to_pylist(), dtype=object)[keep]
    return (ident, np.asarray(labels, dtype=object)[keep],
            np.asarray([probs_list[k] for k in keep], np.float64).reshape(len(keep), len(EXPRESSION_CLASSES)),
            np.asarray([desc_list[k] for k in keep], np.float64).reshape(len(keep), len(DESCRIPTOR_NAMES)))


def calibrate_expression(qc: QCConfig, sources: pa.Table) -> tuple[ExpressionCalibration, np.ndarray, np.ndarray]:
    """The run's expression calibration from its sources' sample, with the sample mask and the out-of-sample
    scores of the sampled photos."""
    e = qc.expression
    ident, labels, probs, desc = sources_arrays(sources)
    keep = sample_identities(ident, e.selftest_max_identities)
    cal, scores = fit_with_evidence(ident[keep], labels[keep], probs[keep], desc[keep],
                                    max_false_pass=e.max_false_pass, min_class_recall=e.min_class_recall,
                                    min_class_photos=e.min_class_photos, min_class_identities=e.min_class_identities)
    return cal, keep, scores


def _partners(ident: np.ndarray, labels: np.ndarray, desc: np.ndarray, label: str, r: int,
              rng: np.random.Generator) -> tuple[int, int] | None:
    """(T, S) for R = photo r: T a photo of class `label` of another identity, S T's identity's photo whose
    expression descriptor differs most from T's (as the planner picks S)."""
    cand = np.flatnonzero((labels == label) & (ident != ident[r]))
    if not len(cand):
        return None
    t = int(cand[rng.integers(len(cand))])
    mates = np.flatnonzero((ident == ident[t]) & (np.arange(len(ident)) != t))
    if not len(mates):
        return t, -1
    return t, int(mates[np.argmax([expression_distance(desc[m], desc[t]) for m in mates])])


def run_selftest(qc: QCConfig, sources: pa.Table, thresholds: Thresholds, seed: int = 0) -> SelfTest:
    """Judge real pseudo-triples of the run's sources with `thresholds` (whose expression class thresholds are
    the calibration's): per class of T, right/wrong-expression pass rates, AUC and intervals."""
    cal, keep, scores = calibrate_expression(qc, sources)
    ident, labels, probs, desc = (a[keep] for a in sources_arrays(sources))
    classes = [c.label for c in cal.classes]
    rng = np.random.default_rng(seed)
    rows = []
    for k, c in enumerate(cal.classes):
        passed: dict[bool, list[bool]] = {True: [], False: []}
        score_of: dict[bool, list[float]] = {True: [], False: []}
        for r in range(len(ident)):
            pair = _partners(ident, labels, desc, c.label, r, rng)
            if pair is None or np.isnan(scores[r, k]):
                continue
            t, s = pair
            right = labels[r] == c.label
            sc = Scores(face_found=True, expr_dist_rt=expression_distance(desc[r], desc[t]),
                        expr_prob_dist_rt=total_variation(probs[r], probs[t]),
                        expr_contrast_st=expression_contrast(probs[r], probs[s], probs[t]) if s >= 0 else None,
                        expr_class=c.label, expr_class_score=float(scores[r, k]))
            passed[right].append(not set(failed_checks(sc, thresholds)) & EXPRESSION_REASONS)
            score_of[right].append(float(scores[r, k]))
        n_right, n_wrong = len(passed[True]), len(passed[False])
        right_pass = float(np.mean(passed[True])) if n_right else None
        wrong_pass = float(np.mean(passed[False])) if n_wrong else None
        rows.append({"class": c.label, "judged": c.judged, "why_not": c.why_not, "threshold": c.threshold,
                     "n_right": n_right, "n_wrong": n_wrong, "right_pass": right_pass,
                     "right_pass_ci": list(wilson_interval(int(sum(passed[True])), n_right)),
                     "wrong_pass": wrong_pass,
                     "wrong_pass_ci": list(wilson_interval(int(sum(passed[False])), n_wrong)),
                     "auc": rank_auc(np.asarray(score_of[True]), np.asarray(score_of[False])),
                     "photos": c.photos, "identities": c.identities})
    sample = dict(photos=int(keep.sum()), identities=len(set(ident.tolist())), classes=classes,
                  sources=sources.num_rows, max_identities=qc.expression.selftest_max_identities)
    return SelfTest(cal, rows, sample)


def with_expression_calibration(thresholds: Thresholds, cal: ExpressionCalibration,
                                judge_unjudgeable: bool = False) -> Thresholds:
    """`thresholds` with the calibration's per-class thresholds and digest."""
    return replace(thresholds, expression_class_thresholds=cal.thresholds(judge_unjudgeable),
                   expression_calibration_sha256=cal.sha256())


def selftest_rows(test: SelfTest, run_id: str) -> list[dict]:
    """qc_selftest rows: one per (check, class, measure)."""
    out = []
    for c in test.classes:
        for measure, value, ci, n in (("right_pass", c["right_pass"], c["right_pass_ci"], c["n_right"]),
                                      ("wrong_pass", c["wrong_pass"], c["wrong_pass_ci"], c["n_wrong"]),
                                      ("auc", c["auc"], [None, None], c["n_right"] + c["n_wrong"])):
            out.append(dict(run_id=run_id, check="expression", label=c["class"], measure=measure, value=value,
                            ci_low=ci[0], ci_high=ci[1], n=n, judged=c["judged"], threshold=c["threshold"],
                            note=c["why_not"], calibration_sha256=test.calibration.sha256()))
    return out
