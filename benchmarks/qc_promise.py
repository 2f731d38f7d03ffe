"""The QC self-test's promise against labelled truth, per set and per expression class (issue 19).

For a labelled corpus (identity + expression label per photo):
- the self-test as a run makes it (qc/selftest.py: calibrated leave-one-identity-out on the whole set), beside
  the expression checks shipped before issue 19 (fixed thresholds), on the same real pseudo-triples;
- promise vs truth on people it never saw: the self-test runs on a random half of the identities (its promise:
  per class, right- and wrong-expression pass rates) and the model and thresholds it fitted judge the photos of
  the other half (the truth, from their labels); averaged over splits;
- across sets: a run whose corpus is two sets pooled (labels named alike: smiling = happy) judges the third set's
  photos, for the classes it has.
Only aggregate figures come out (research-terms corpora: nothing per image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from qc.config import QCConfig
from qc.decide import Scores, Thresholds, failed_checks
from qc.expression_calibration import identity_relative, photo_features
from qc.expression_score import expression_contrast, total_variation
from qc.selftest import EXPRESSION_REASONS, calibrate_expression, run_selftest, with_expression_calibration
from stages.face.expression import expression_descriptor, expression_distance

JAFFE_NAMES = {"NE": "neutral", "HA": "happy", "SA": "sad", "AN": "angry", "SU": "surprised", "DI": "disgusted",
               "FE": "fearful"}
COMMON_NAMES = {"smiling": "happy"}  # London's label for the class the others call happy (cross-set pooling)
# The expression checks shipped before issue 19: landmark distance, learned distance, contrast with S.
OLD_CHECKS = Thresholds(None, None, 0.12, 0.0, "dlib", max_expression_prob_distance=0.5,
                        min_expression_contrast=0.0)


@dataclass
class LabelledSet:
    name: str
    ident: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    desc: np.ndarray

    def subset(self, keep: np.ndarray, name: str | None = None) -> LabelledSet:
        return LabelledSet(name or self.name, self.ident[keep], self.labels[keep], self.probs[keep], self.desc[keep])

    def renamed(self, names: dict[str, str], prefix: str) -> LabelledSet:
        return LabelledSet(self.name, np.asarray([prefix + i for i in self.ident], dtype=object),
                           np.asarray([names.get(x, x) for x in self.labels], dtype=object), self.probs, self.desc)

    def sources(self) -> pa.Table:
        """The columns of `sources` the self-test reads."""
        return pa.table({"identity": [str(x) for x in self.ident], "expression": [str(x) for x in self.labels],
                         "expression_probs": self.probs.tolist(), "expression_descriptor": self.desc.tolist()})


def load_set(name: str, root: Path, as_grey: bool) -> LabelledSet:
    """Detect, align and score a labelled corpus folder (benchmarks/bench_mouth_grey.py's reader: identity folders
    of expression.jpg, or JAFFE-style names); JAFFE's two-letter codes become class names."""
    from benchmarks.bench_mouth_grey import load_corpus
    from stages.face.learned_expression import LearnedExpression
    d = load_corpus(root, as_grey)
    probs = LearnedExpression().probabilities(d["img"], d["lm"]).astype(np.float64)
    return LabelledSet(name, np.asarray(d["id"], dtype=object),
                       np.asarray([JAFFE_NAMES.get(e, e) for e in d["ex"]], dtype=object), probs,
                       np.stack([expression_descriptor(lm) for lm in d["lm"]]).astype(np.float64))


def _rates(passed: dict[str, dict[bool, list[bool]]]) -> dict[str, dict]:
    return {c: {"right": float(np.mean(v[True])) if v[True] else None,
                "wrong": float(np.mean(v[False])) if v[False] else None,
                "n_right": len(v[True]), "n_wrong": len(v[False])} for c, v in sorted(passed.items())}


def old_checks(s: LabelledSet, seed: int = 0) -> dict[str, dict]:
    """Per class of T: pass rates of the pre-issue-19 expression checks on the self-test's pseudo-triples
    (R every photo, T a random photo of the class from another identity, S T's most different photo)."""
    rng = np.random.default_rng(seed)
    passed: dict[str, dict[bool, list[bool]]] = {}
    for c in sorted(set(s.labels.tolist())):
        for r in range(len(s.ident)):
            cand = np.flatnonzero((s.labels == c) & (s.ident != s.ident[r]))
            if not len(cand):
                continue
            t = int(cand[rng.integers(len(cand))])
            mates = np.flatnonzero((s.ident == s.ident[t]) & (np.arange(len(s.ident)) != t))
            o = int(mates[np.argmax([expression_distance(s.desc[m], s.desc[t]) for m in mates])]) if len(mates) \
                else -1
            sc = Scores(face_found=True, expr_dist_rt=expression_distance(s.desc[r], s.desc[t]),
                        expr_prob_dist_rt=total_variation(s.probs[r], s.probs[t]),
                        expr_contrast_st=expression_contrast(s.probs[r], s.probs[o], s.probs[t]) if o >= 0 else None)
            ok = not set(failed_checks(sc, OLD_CHECKS)) & EXPRESSION_REASONS
            passed.setdefault(c, {True: [], False: []})[bool(s.labels[r] == c)].append(ok)
    return _rates(passed)


def selftest(s: LabelledSet, qc: QCConfig) -> dict[str, dict]:
    """The self-test of a run whose corpus is `s`: per class, judged, right/wrong pass, AUC."""
    src = s.sources()  # no embeddings: the identity thresholds stay as configured (they do not judge expression)
    thresholds = with_expression_calibration(Thresholds.from_config(qc), calibrate_expression(qc, src)[0])
    test = run_selftest(qc, src, thresholds)
    return {c["class"]: {"judged": c["judged"], "right": c["right_pass"], "wrong": c["wrong_pass"],
                         "auc": c["auc"], "n_right": c["n_right"], "n_wrong": c["n_wrong"], "why_not": c["why_not"]}
            for c in test.classes}


def judged_features(judge: LabelledSet, classes: Sequence[str]) -> np.ndarray:
    """The judged photos' features relative to their person's class-balanced mean over the *run's* classes only:
    QC takes a generated R relative to j's corpus photos, which show only the classes the run's corpus has."""
    return identity_relative(judge.ident, judge.labels, photo_features(judge.probs, judge.desc),
                             reference=np.isin(judge.labels, list(classes)))


def judge_unseen(fit_on: LabelledSet, judge: LabelledSet, qc: QCConfig) -> tuple[dict[str, dict], dict[str, dict]]:
    """(promise, truth): the self-test of a run on `fit_on`, and its calibrated check applied to the real photos of
    `judge` (each photo as R for every class of the calibration; j's mean from the judged person's photos of the
    run's classes). Truth's `wrong` counts R of the run's other classes, as the promise does; `wrong_uncovered`
    counts R of classes the run's corpus does not show (nothing in the corpus can promise those)."""
    promise = selftest(fit_on, qc)
    cal = calibrate_expression(qc, fit_on.sources())[0]
    thresholds = cal.thresholds()
    classes = cal.model.classes if cal.model is not None else ()
    z = judged_features(judge, classes)
    scores = cal.model.log_odds(z) if cal.model is not None else np.full((len(z), 0), np.nan)
    passed: dict[str, dict[bool, list[bool]]] = {}
    uncovered: dict[str, list[bool]] = {}
    for k, c in enumerate(classes):
        if thresholds.get(c) is None or not (judge.labels == c).any():
            continue
        t = Thresholds(None, None, None, 0.0, "dlib", expression_class_thresholds=thresholds)
        for r in range(len(z)):
            ok = not failed_checks(Scores(face_found=True, expr_class=c, expr_class_score=float(scores[r, k])), t)
            if judge.labels[r] in classes:
                passed.setdefault(c, {True: [], False: []})[bool(judge.labels[r] == c)].append(ok)
            else:
                uncovered.setdefault(c, []).append(ok)
    truth = _rates(passed)
    for c, row in truth.items():
        row["wrong_uncovered"] = float(np.mean(uncovered[c])) if uncovered.get(c) else None
    return promise, truth


def split_halves(s: LabelledSet, qc: QCConfig, splits: int, seed: int = 0) -> dict[str, dict]:
    """Per class, averaged over `splits` random halvings of the identities: the promise of a self-test on one half
    and the truth on the other; with the mean absolute gap per split."""
    rng = np.random.default_rng(seed)
    people = np.asarray(sorted(set(s.ident.tolist())), dtype=object)
    acc: dict[str, dict[str, list[float]]] = {}
    for _ in range(splits):
        a = set(rng.permutation(people)[: len(people) // 2].tolist())
        in_a = np.asarray([i in a for i in s.ident])
        promise, truth = judge_unseen(s.subset(in_a), s.subset(~in_a), qc)
        for c, t in truth.items():
            p = promise.get(c)
            if not p or not p["judged"] or t["right"] is None or t["wrong"] is None:
                continue
            row = acc.setdefault(c, {k: [] for k in ("promise_right", "truth_right", "gap_right", "promise_wrong",
                                                     "truth_wrong", "gap_wrong")})
            for side in ("right", "wrong"):
                row[f"promise_{side}"].append(p[side])
                row[f"truth_{side}"].append(t[side])
                row[f"gap_{side}"].append(abs(p[side] - t[side]))
    return {c: {k: float(np.mean(v)) for k, v in row.items()} | {"splits": len(row["gap_right"])}
            for c, row in sorted(acc.items())}


def pooled(sets: list[LabelledSet]) -> LabelledSet:
    """Several sets as one run's corpus: identities prefixed by their set, labels named alike."""
    parts = [s.renamed(COMMON_NAMES, f"{s.name}/") for s in sets]
    return LabelledSet("+".join(s.name for s in sets), *(np.concatenate([getattr(p, k) for p in parts])
                                                          for k in ("ident", "labels", "probs", "desc")))


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def report(sets: list[LabelledSet], qc: QCConfig, splits: int) -> tuple[str, dict]:
    """Markdown tables of every figure, and the figures."""
    figures: dict = {"sets": {}, "cross": {}}
    lines = []
    for s in sets:
        st, old, halves = selftest(s, qc), old_checks(s), split_halves(s, qc, splits)
        figures["sets"][s.name] = dict(selftest=st, old_checks=old, halves=halves, photos=len(s.ident),
                                       identities=len(set(s.ident.tolist())))
        lines += [f"\n**{s.name}** ({len(s.ident)} photos, {len(set(s.ident.tolist()))} identities). Pass rates in %,"
                  " R with T's expression (right) / another expression (wrong); self-test leave-one-identity-out on "
                  f"the whole set; promise (self-test on a random half of the identities) vs truth (its check on "
                  f"the other half), mean over {splits} splits.\n",
                  "| T class | before issue 19 right / wrong | self-test: judged | right / wrong | AUC | "
                  "half: promise right / truth right | promise wrong / truth wrong | mean abs gap right / wrong |",
                  "|---|---|---|---|---|---|---|---|"]
        for c, f in st.items():
            o, h = old.get(c, {}), halves.get(c)
            half = (f"{pct(h['promise_right'])} / {pct(h['truth_right'])} | {pct(h['promise_wrong'])} / "
                    f"{pct(h['truth_wrong'])} | {pct(h['gap_right'])} / {pct(h['gap_wrong'])}") if h else \
                "not judged on the halves | | "
            lines.append(f"| {c} | {pct(o.get('right'))} / {pct(o.get('wrong'))} | "
                         f"{'yes' if f['judged'] else 'NO: ' + str(f['why_not'])} | {pct(f['right'])} / "
                         f"{pct(f['wrong'])} | {f['auc']:.3f} | {half} |" if f["auc"] is not None else
                         f"| {c} | | no | | | |")
    if len(sets) == 3:
        lines += ["\n**Across sets**: a run whose corpus is two sets pooled (smiling = happy) judges the third "
                  "set's real photos with its calibrated check; promise = that run's self-test. Pass rates in %.\n",
                  "| run's corpus | judged set | T class | promise right / truth right | promise wrong / truth wrong "
                  "| truth: wrong R of classes the corpus lacks |",
                  "|---|---|---|---|---|---|"]
        for k, held in enumerate(sets):
            train = pooled([s for m, s in enumerate(sets) if m != k])
            promise, truth = judge_unseen(train, held.renamed(COMMON_NAMES, f"{held.name}/"), qc)
            figures["cross"][held.name] = dict(promise=promise, truth=truth)
            for c, t in truth.items():
                p = promise[c]
                lines.append(f"| {train.name} | {held.name} | {c} | {pct(p['right'])} / {pct(t['right'])} | "
                             f"{pct(p['wrong'])} / {pct(t['wrong'])} | {pct(t.get('wrong_uncovered'))} |")
    return "\n".join(lines), figures
