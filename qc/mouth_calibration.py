"""Mouth thresholds calibrated per run on the run's own real mouths (its sources' aligned faces).

A bounded, deterministic sample of the sources (qc.mouth.calibration_sample, whole identities first, by hash) is
scored with qc/mouth.py, described with qc/mouth_realism.py, and each photo with another photo of its identity is
also a legit R against that reference (qc/mouth_reference.py) and, with one synthetic artifact painted on, a damaged
R for the run's damage detector (qc/mouth_detector.py). The thresholds share qc.mouth.calibration_target jointly
(qc/mouth_budget.py): each check's tail quantile at its share, moved out by one margin, the smallest at which the
real mouths flagged by any check stay within the target when cross-validated over identity folds (with the
split-conformal +1). The detector's part of the budget is chosen per run (detector_gate): off, or its own margin
with the other checks sharing the rest through their common margin, whichever catches the most of the run's own
synthetic damaged R at the same out-of-sample budget (its heavy-tailed real scores on a corpus of few
identities can move the other checks' thresholds out by more than it catches); the choice and the
cross-validated recalls are in the record. Every score it is set on is out of sample: the realism score
compares a mouth with other identities' mouths only, the reference check's null is fitted without the identity,
the detector's scores come from fits without the identity's fold. The flag rates reported are out of
sample too: each identity's mouths are judged with thresholds fitted on the other identities;
benchmarks/bench_mouth_checks.py reports them per set. An explicit qc.mouth value overrides its calibrated
threshold; with fewer than MIN_MOUTHS real mouths (or MIN_IDENTITIES identities) the shipped fallbacks (Thresholds'
defaults) apply and the realism, reference and damage checks are off (the reference and damage checks also with
fewer than MIN_MOUTHS legit pairs).

The tint check stands outside the budget: on a greyscale corpus (most sampled faces without chroma, as the realism
bank decides) colour in R's mouth is what the generator painted (qc/mouth.py mouth_tint), and its threshold lies
beyond every real mouth of the sample and at least GREY_MAX_CHROMA (the chroma below which a face counts as grey),
so it flags no real mouth in sample (out of sample: one beyond every other identity's; counted in the reported
rates). On a colour corpus lips are redder than skin by any amount and the check is off.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests.artifacts import rgb_from_png
from manifests.store import ManifestStore
from qc.config import QCConfig
from qc.decide import Thresholds
from qc.mouth import GREY_MAX_CHROMA, face_has_chroma, mouth_scores
from qc.mouth_budget import ScoreTail, budget_thresholds, check_share
from qc.mouth_detector import REFERENCE_INPUTS, DetectorSamples, MouthDetector, identity_folds, measure_samples
from qc.mouth_realism import FEATURES as REALISM_FEATURES
from qc.mouth_realism import RealMouthBank, canonical_mouth, deviation_score, mouth_descriptor, mouth_shape
from qc.mouth_reference import FEATURES as REFERENCE_FEATURES
from qc.mouth_reference import ReferenceNull, reference_features, reference_pairs

# The realism check's share of the 2 % target is a 1 % tail: fewer than 100 real mouths cannot place it (on the
# 24-mouth demo corpus a calibration flagged 54 % of real mouths out of sample), so smaller runs keep the shipped
# thresholds with realism off.
MIN_MOUTHS = 100
MIN_IDENTITIES = 3
_SOURCE_COLUMNS = ["source_id", "identity", "aligned_path", "landmarks68"]


def source_columns() -> list[str]:
    """The `sources` columns calibrate_mouth reads."""
    return list(_SOURCE_COLUMNS)


@dataclass(frozen=True)
class RealMouths:
    """The scores and descriptors of a sample of real mouths."""

    identities: np.ndarray  # (n,) str
    aspect: np.ndarray
    teeth: np.ndarray
    lip_line: np.ndarray
    seam: np.ndarray
    sharpness_ratio: np.ndarray
    tint: np.ndarray
    bank: RealMouthBank
    # R against its reference (qc/mouth_reference.py): each mouth resampled as a legit R, paired with another photo
    # of its identity; differences (pairs, len(FEATURES)) of the pairs (a: the legit R, b: its reference)
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    reference_diffs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    # the detector's legit and damaged R, one row per pair (qc/mouth_detector.py); None: not measured
    detector_samples: DetectorSamples | None = None

    @property
    def realism(self) -> np.ndarray:
        """Each mouth's realism distance to the other identities' mouths (computed once)."""
        if "realism" not in self._cache:
            self._cache["realism"] = self.bank.leave_one_identity_out()
        return self._cache["realism"]

    @property
    def reference(self) -> np.ndarray:
        """Each mouth's legit R-vs-reference score, its identity's pairs scored by the null fitted on the other
        identities' pairs (NaN: no other photo of its identity); computed once."""
        if "reference" not in self._cache:
            out = np.full(len(self.aspect), np.nan)
            for ident in np.unique(self.identities):
                out = np.where(self.identities == ident, reference_scores(self, reference_null(self, ident)), out)
            self._cache["reference"] = out
        return self._cache["reference"]

    @property
    def detector(self) -> np.ndarray:
        """Each mouth's legit-R damage score from the detector fitted without its identity's fold (NaN: no pair or
        no detector samples); computed once."""
        if "detector" not in self._cache:
            out = np.full(len(self.aspect), np.nan)
            if self.detector_samples is not None and len(self.pairs):
                out[self.pairs[:, 0]] = self.detector_samples.out_of_fold()[0]
            self._cache["detector"] = out
        return self._cache["detector"]

    _cache: dict = field(default_factory=dict, repr=False, compare=False)


def measure_real_mouths(faces: list[tuple[str, np.ndarray, np.ndarray]], keys: list[str] | None = None) -> RealMouths:
    """(identity, aligned RGB, landmarks68) -> scores and descriptors, and the legit R-vs-reference differences
    (keys: one per face, e.g. source ids, for the deterministic resampling and pairing; default the index). The
    chroma features are used when most faces have chroma (a colour corpus)."""
    chroma = np.mean([face_has_chroma(rgb, lm) for _, rgb, lm in faces]) >= 0.5 if faces else True
    ms = [mouth_scores(rgb, lm) for _, rgb, lm in faces]
    ids = np.array([i for i, _, _ in faces], dtype=object).astype(str)
    def col(name: str) -> np.ndarray:
        return np.array([getattr(s, name) for s in ms], np.float64)

    shapes = np.array([mouth_shape(lm) for _, _, lm in faces]).reshape(len(faces), -1)
    keys = keys if keys is not None else [str(k) for k in range(len(faces))]
    pairs = reference_pairs(ids, keys)
    references = {b for _, b in pairs}
    desc, photo = [], {}
    for k, (_, rgb, lm) in enumerate(faces):  # each photo's mouth warped once for its descriptor and reference
        mouth = canonical_mouth(rgb, lm)
        desc.append(mouth_descriptor(rgb, lm, bool(chroma), mouth))
        if k in references:
            photo[k] = reference_features(rgb, lm, mouth)
    bank = RealMouthBank(np.array(desc).reshape(len(faces), -1), shapes, ids, bool(chroma))
    pair_rows = np.array(pairs, np.int64).reshape(-1, 2)
    samples = measure_samples(faces, keys, pair_rows, bank, col("mouth_aspect"), col("teeth_share"), photo)
    # the legit R's features minus its reference's are the detector's inputs of those columns (the same R)
    return RealMouths(ids, col("mouth_aspect"), col("teeth_share"), col("lip_line_whiteness"), col("seam_score"),
                      col("sharpness_ratio"), col("tint"), bank, pair_rows, samples.real[:, REFERENCE_INPUTS], samples)


def reference_null(m: RealMouths, without: str | None = None) -> ReferenceNull:
    """The legit R-vs-reference differences fitted on every pair, or on the pairs of identities other than
    `without`."""
    d = m.reference_diffs
    if without is not None and len(d):
        d = d[m.identities[m.pairs[:, 0]] != without]
    return ReferenceNull.fit(d)


def reference_scores(m: RealMouths, null: ReferenceNull) -> np.ndarray:
    """Every mouth's legit R-vs-reference score under `null` (NaN where it has no pair)."""
    out = np.full(len(m.aspect), np.nan)
    if len(m.pairs):
        out[m.pairs[:, 0]] = null.scores(m.reference_diffs)
    return out


def _with_landmarks(sources: pa.Table) -> pa.Table:
    """The sources that have 68 landmarks (a source without them has no mouth to measure)."""
    n = pc.fill_null(pc.list_value_length(sources.column("landmarks68")), 0)
    return sources.filter(pc.equal(n, 136))


def sample_sources(sources: pa.Table, limit: int) -> pa.Table:
    """At most `limit` sources, whole identities first, chosen by the hash of their identity then of their source
    id (the same sample on every call; an identity's photos together, so the reference check has pairs), in that
    hash order: the damage detector's donors are picked by position (qc/mouth_detector.py), so the sources' own
    order (ingest's commit order) must not reach the calibration."""
    def h(x: object) -> str:
        return hashlib.sha256(str(x).encode()).hexdigest()

    keys = [(h(i), h(s)) for i, s in zip(sources.column("identity").to_pylist(),
                                         sources.column("source_id").to_pylist(), strict=True)]
    order = sorted(range(len(keys)), key=keys.__getitem__)[:limit]
    return sources.take(pa.array(order, pa.int64()))


def read_real_mouths(sources: pa.Table, read: Callable[[str], np.ndarray], limit: int) -> RealMouths:
    """The sampled sources' aligned faces (read(aligned_path)) measured."""
    rows = sample_sources(sources.select(_SOURCE_COLUMNS), limit).to_pylist()
    return measure_real_mouths([(r["identity"], read(r["aligned_path"]),
                                 np.asarray(r["landmarks68"], np.float32).reshape(68, 2)) for r in rows],
                               [str(r["source_id"]) for r in rows])


# qc/mouth_budget.py's check -> the Thresholds field it sets
_FIELDS = {"ghost_teeth": "max_teeth_closed", "ghost_lip_line": "max_lip_line_whiteness", "seam": "max_mouth_seam",
           "blur": "min_mouth_sharpness_ratio", "realism": "max_mouth_realism",
           "reference": "max_mouth_reference_diff", "detector": "max_mouth_damage"}


def _real_tails(m: RealMouths, keep: np.ndarray, closed_aspect: float, detector: bool) -> dict[str, ScoreTail]:
    """The real mouths' out-of-sample scores per check (qc/mouth_budget.py), of the mouths in `keep`."""
    closed = m.aspect < closed_aspect

    def only(x: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return (x if where is None else np.where(where, x, np.nan))[keep]

    tails = {"ghost_teeth": ScoreTail(only(m.teeth, closed)), "ghost_lip_line": ScoreTail(only(m.lip_line, closed)),
             "seam": ScoreTail(only(m.seam)), "blur": ScoreTail(only(m.sharpness_ratio), "min", log=True),
             "realism": ScoreTail(only(m.realism)), "reference": ScoreTail(only(m.reference))}
    if detector:
        tails["detector"] = ScoreTail(only(m.detector))
    return tails


def _damaged_tails(m: RealMouths, samples: DetectorSamples, closed_aspect: float) -> dict[str, ScoreTail]:
    """Every check's score of the run's synthetic damaged R (qc/mouth_detector.py), out of sample as the real
    ones: the detector's from fits without the identity's fold, the reference score under the null fitted without
    the fold's identities, realism against other identities' mouths."""
    x = samples.damaged
    nd, nr = len(REALISM_FEATURES), len(REFERENCE_FEATURES)
    aspect, teeth, lip, seam, sharp = (x[:, nd + nr + i] for i in range(5))
    closed = aspect < closed_aspect
    folds = samples.folds()
    reference = np.full(len(x), np.nan)
    rows = m.identities[m.pairs[:, 0]]
    for f in np.unique(folds):
        null = ReferenceNull.fit(m.reference_diffs[np.isin(rows, samples.identities[folds == f], invert=True)])
        reference[folds == f] = null.scores(x[folds == f, nd:nd + nr])
    return {"ghost_teeth": ScoreTail(np.where(closed, teeth, np.nan)),
            "ghost_lip_line": ScoreTail(np.where(closed, lip, np.nan)), "seam": ScoreTail(seam),
            "blur": ScoreTail(sharp, "min", log=True),
            "realism": ScoreTail(np.array([deviation_score(d) for d in x[:, :nd]], np.float64).reshape(len(x))),
            "reference": ScoreTail(reference), "detector": ScoreTail(samples.out_of_fold()[1])}


def detector_gate(m: RealMouths, target: float, closed_aspect: float) -> dict:
    """The damage detector's part of the budget on this run: off or its own margin (qc/mouth_budget.py
    check_share on the run's own synthetic damaged R); computed once per (target, aspect)."""
    key = f"detector_gate/{target}/{closed_aspect}"
    if key not in m._cache:
        samples = m.detector_samples
        if samples is None or not len(m.pairs):
            m._cache[key] = dict(on=False, margin=None, why="no legit pairs to fit the detector on")
        else:
            gate = check_share(_real_tails(m, np.ones(len(m.aspect), bool), closed_aspect, True),
                                     _damaged_tails(m, samples, closed_aspect),
                                     identity_folds(m.identities), samples.folds(),
                                     target, "detector", samples.kinds)
            gate["why"] = ("the detector at this margin (the other checks sharing the rest of the budget) catches the "
                           "most of the run's own synthetic damage" if gate["on"] else "without the detector the "
                           "other checks catch at least as much of the run's own synthetic damage at the same budget:"
                           " off")
            m._cache[key] = gate
    return m._cache[key]


def fit_thresholds(m: RealMouths, keep: np.ndarray, target: float, closed_aspect: float,
                   gate: dict | None = None) -> dict[str, float | None]:
    """The calibrated thresholds from the mouths in `keep` (a boolean mask), sharing `target` jointly; the
    detector at the margin `gate` gives it, or off (threshold None); gate None: detector_gate on all of `m`."""
    gate = detector_gate(m, target, closed_aspect) if gate is None else gate
    on = bool(gate["on"])
    folds = identity_folds(m.identities[keep])
    fitted, _ = budget_thresholds(_real_tails(m, keep, closed_aspect, on), folds, target,
                                  {"detector": gate["margin"]} if on else None)
    out: dict[str, float | None] = {_FIELDS[c]: v for c, v in fitted.items()}
    if not on:
        out["max_mouth_damage"] = None
    out["max_mouth_tint"] = tint_threshold(m, keep)
    return out


def tint_threshold(m: RealMouths, keep: np.ndarray) -> float | None:
    """The tint check's threshold from the mouths in `keep`: beyond all of them and at least GREY_MAX_CHROMA on a
    greyscale corpus; None (off) on a colour corpus."""
    if m.bank.use_chroma:
        return None
    return float(max(GREY_MAX_CHROMA, np.max(m.tint[keep], initial=0.0)))


CHECKS = ("ghost_teeth", "mouth_seam", "mouth_blur", "mouth_unrealistic", "mouth_differs_from_reference",
          "mouth_damaged", "mouth_tinted")


def flags(m: RealMouths, t: Thresholds) -> dict[str, np.ndarray]:
    """Which real mouths each single-face mouth check flags under thresholds t."""
    closed = m.aspect < t.mouth_closed_aspect
    real = m.realism if t.max_mouth_realism is not None else np.zeros(len(m.aspect))
    limit = t.max_mouth_realism if t.max_mouth_realism is not None else np.inf
    ref_limit = t.max_mouth_reference_diff if t.max_mouth_reference_diff is not None else np.inf
    damage_limit = t.max_mouth_damage if t.max_mouth_damage is not None else np.inf
    tint_limit = t.max_mouth_tint if t.max_mouth_tint is not None else np.inf
    return {"mouth_damaged": np.nan_to_num(m.detector, nan=-np.inf) > damage_limit,
            "mouth_differs_from_reference": np.nan_to_num(m.reference, nan=-np.inf) > ref_limit,
            "ghost_teeth": closed & ((m.teeth > t.max_teeth_closed) | (m.lip_line > t.max_lip_line_whiteness)),
            "mouth_seam": m.seam > t.max_mouth_seam, "mouth_blur": m.sharpness_ratio < t.min_mouth_sharpness_ratio,
            "mouth_unrealistic": real > limit, "mouth_tinted": m.tint > tint_limit}


def apply_overrides(base: Thresholds, fitted: dict[str, float | None], qc: QCConfig) -> Thresholds:
    """`fitted` thresholds where qc.mouth leaves the value null."""
    mc = qc.mouth
    given: dict[str, float | None] = dict(
        max_teeth_closed=mc.max_teeth_closed, max_lip_line_whiteness=mc.max_lip_line_whiteness,
        max_mouth_seam=mc.max_seam, min_mouth_sharpness_ratio=mc.min_sharpness_ratio, max_mouth_realism=mc.max_realism,
        max_mouth_reference_diff=mc.max_reference_diff, max_mouth_damage=mc.max_damage, max_mouth_tint=mc.max_tint)
    chosen = {k: (given[k] if given[k] is not None else v) for k, v in fitted.items()}
    if not mc.check_reference:
        chosen["max_mouth_reference_diff"] = None
    if not mc.check_damage:
        chosen["max_mouth_damage"] = None
    if not mc.check_tint:
        chosen["max_mouth_tint"] = None
    return replace(base, **chosen)  # type: ignore[arg-type]


def out_of_sample_flags(m: RealMouths, base: Thresholds, qc: QCConfig) -> dict[str, np.ndarray]:
    """Each identity's mouths flagged with thresholds fitted on the other identities."""
    out = {c: np.zeros(len(m.aspect), bool) for c in CHECKS}
    gate = detector_gate(m, qc.mouth.calibration_target, base.mouth_closed_aspect)
    for ident in np.unique(m.identities):
        mine = m.identities == ident
        held = replace(m, _cache={"realism": m.bank.held_out(str(ident)),  # feature scales without ident too
                                  "reference": reference_scores(m, reference_null(m, str(ident))),
                                  "detector": m.detector})  # out of fold already
        t = apply_overrides(base, fit_thresholds(held, ~mine, qc.mouth.calibration_target,
                                                 base.mouth_closed_aspect, gate), qc)
        for c, f in flags(held, t).items():
            out[c][mine] = f[mine]
    return out


def _rates(flagged: dict[str, np.ndarray], m: RealMouths, t: Thresholds) -> dict[str, dict[str, float | int]]:
    groups = {"all": np.ones(len(m.aspect), bool), "closed": m.aspect < t.mouth_closed_aspect,
              "open": m.aspect >= t.mouth_open_aspect}
    out: dict[str, dict[str, float | int]] = {}
    for name, g in groups.items():
        anyf = np.any([f for f in flagged.values()], axis=0) if flagged else np.zeros(len(g), bool)
        row: dict[str, float | int] = {"mouths": int(g.sum()), "any": float(anyf[g].mean()) if g.any() else 0.0}
        row.update({c: float(f[g].mean()) if g.any() else 0.0 for c, f in flagged.items()})
        out[name] = row
    return out


@dataclass(frozen=True)
class MouthCalibration:
    thresholds: Thresholds  # with the mouth fields calibrated (or overridden)
    bank: RealMouthBank | None  # the real mouths the realism score compares R with (None: check off)
    record: dict  # what run.json and the self-test report
    # the legit R-vs-reference differences the reference check scores R against (None: check off)
    reference: ReferenceNull | None = None
    detector: MouthDetector | None = None  # the run's damage detector (None: check off)


def calibrate_real_mouths(m: RealMouths | None, base: Thresholds, qc: QCConfig) -> MouthCalibration:
    """Thresholds fitted on all of `m`, and the flag rates on real mouths (in and out of sample)."""
    n_ids = len(np.unique(m.identities)) if m is not None else 0
    if m is None or len(m.aspect) < MIN_MOUTHS or n_ids < MIN_IDENTITIES:
        t = apply_overrides(base, {}, qc)
        t = replace(t, max_mouth_realism=qc.mouth.max_realism, max_mouth_reference_diff=None, max_mouth_damage=None,
                    mouth_thresholds_source="uncalibrated")
        return MouthCalibration(t, None, dict(source="uncalibrated", mouths=0 if m is None else len(m.aspect),
                                              identities=n_ids, note=f"fewer than {MIN_MOUTHS} real mouths or "
                                              f"{MIN_IDENTITIES} identities: shipped mouth thresholds, realism, "
                                              "reference and damage checks off"))
    target = qc.mouth.calibration_target
    fitted = fit_thresholds(m, np.ones(len(m.aspect), bool), target, base.mouth_closed_aspect)
    t = replace(apply_overrides(base, fitted, qc), mouth_thresholds_source="calibrated")
    if len(m.pairs) < MIN_MOUTHS:  # too few identities with two photos to place the check's tail: off
        t = replace(t, max_mouth_reference_diff=None, max_mouth_damage=None)
    record = dict(source="calibrated", target=target, mouths=len(m.aspect), identities=n_ids,
                  chroma=m.bank.use_chroma, fitted=fitted,
                  applied={k: getattr(t, k) for k in fitted},
                  flag_rate_in_sample=_rates(flags(m, t), m, t),
                  flag_rate_leave_one_identity_out=_rates(out_of_sample_flags(m, base, qc), m, t),
                  reference_pairs=len(m.pairs),
                  detector_gate=detector_gate(m, target, base.mouth_closed_aspect))
    null = reference_null(m) if t.max_mouth_reference_diff is not None else None
    if null is not None:
        record["reference_null"] = null.record()
    detector = None
    if t.max_mouth_damage is not None and m.detector_samples is not None:
        detector = m.detector_samples.fit()
        record["detector"] = detector.record()
    return MouthCalibration(t, m.bank if t.max_mouth_realism is not None else None, record, null, detector)


_MEMO: dict[tuple, MouthCalibration] = {}


def calibrate_mouth(qc: QCConfig, thresholds: Thresholds, sources: pa.Table,
                    read: Callable[[str], np.ndarray]) -> MouthCalibration:
    """The run's mouth thresholds: `thresholds` with the mouth fields calibrated on the sources' real mouths
    (`sources`: source_id, identity, aligned_path, landmarks68; `read`: aligned path -> RGB). Memoised per
    process on the sampled source ids and the config, so the driver's several callers measure once."""
    usable = _with_landmarks(sources.select(_SOURCE_COLUMNS))
    sample = sample_sources(usable, qc.mouth.calibration_sample) if usable.num_rows else usable
    key = (tuple(sample.column("source_id").to_pylist()) if sample.num_rows else (),
           qc.mouth.model_dump_json(), thresholds.to_json())
    if key not in _MEMO:
        m = read_real_mouths(sample, read, qc.mouth.calibration_sample) if sample.num_rows else None
        if len(_MEMO) > 8:
            _MEMO.clear()
        _MEMO[key] = calibrate_real_mouths(m, thresholds, qc)
    return _MEMO[key]


def store_reader(store: ManifestStore) -> Callable[[str], np.ndarray]:
    """Reads a run's stored image (an artifact URL) through the store's filesystem."""
    return lambda url: rgb_from_png(store.fs.cat_file(url))
