"""Turn QC scores into accept/reject with one reason code per failed check, thresholds from config.

Pure: scores + thresholds -> reasons. The QC stage (qc/stage.py) and `ciep qc redecide` (qc/redecide.py)
both call failed_checks, so a re-decision from stored scores is the decision the stage would have made.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from qc.config import QCConfig
from qc.identity_margin import FALLBACK_MARGIN

# Fixed order: the first failed check is the row's primary `reason`.
REASON_NO_FACE = "qc_no_face"
REASON_BLURRY = "qc_blurry"
REASON_IDENTITY_LEAK = "identity_leak"  # R not identified as j rather than i (gallery margin or absolute)
REASON_IDENTITY_AMBIGUOUS = "identity_ambiguous"  # another gallery identity as close to R as j
REASON_SWAP_FAILED = "swap_failed"
REASON_EXPRESSION_LOST = "expression_lost"  # landmark descriptor distance R-T too large
REASON_EXPRESSION_MISMATCH = "expression_mismatch"  # learned expression probabilities R-T too far apart
REASON_LAZY_EDIT = "lazy_edit"  # R kept the carrier's expression
REASON_EXPRESSION_NOT_GAINED = "expression_not_gained"  # R not enough closer to T than the carrier was
REASON_EXPRESSION_NEARER_S = "expression_nearer_s"  # R's expression nearer S's (i's other expression) than T's
# R not recognised as T's expression class by the run's calibrated discriminant (qc/expression_calibration.py)
REASON_EXPRESSION_NOT_RECOGNISED = "expression_not_recognised"
REASON_EXPRESSION_UNJUDGEABLE = "expression_unjudgeable"  # the run's self-test cannot certify T's class
REASON_GHOST_TEETH = "ghost_teeth"  # teeth-like pixels over closed lips
REASON_MOUTH_STATE = "mouth_state_mismatch"  # open/closed or teeth visible differs from T
REASON_MOUTH_SEAM = "mouth_seam"
REASON_MOUTH_BLUR = "mouth_blur"
REASON_MOUTH_UNREAL = "mouth_unrealistic"  # R's mouth far from the run's real mouths (qc/mouth_realism.py)
# R's mouth has specks, fragments, an outline or edges beyond the photo it was made from (qc/mouth_reference.py)
REASON_MOUTH_REFERENCE = "mouth_differs_from_reference"
# the run's damage detector calls R's mouth damaged (qc/mouth_detector.py)
REASON_MOUTH_DAMAGE = "mouth_damaged"
# R's mouth carries colour where the run's corpus is greyscale (qc/mouth.py mouth_tint)
REASON_MOUTH_TINT = "mouth_tinted"
ACCEPTED = "accepted"


@dataclass(frozen=True)
class Thresholds:
    max_leak_similarity: float | None
    min_swap_similarity: float | None
    max_expression_distance: float | None
    min_sharpness: float
    identity_backend: str
    min_identity_margin: float = 0.02
    max_expression_prob_distance: float | None = None
    min_expression_gain: float = 0.3
    min_carrier_distance: float = 0.25
    max_lazy_distance: float = 0.1
    min_expression_contrast: float | None = None
    mouth_open_aspect: float = 0.12
    mouth_closed_aspect: float = 0.06
    teeth_visible: float = 0.10
    teeth_absent: float = 0.03
    max_teeth_closed: float = 0.12
    max_lip_line_whiteness: float = -0.05
    max_mouth_seam: float = 15.0
    min_mouth_sharpness_ratio: float = 0.09
    # "config", "calibrated" (every identity threshold from the run's sources), "uncalibrated" (null in config,
    # nothing to calibrate from) or, when they differ, each one's: "leak:config,swap:calibrated,margin:calibrated"
    identity_thresholds_source: str = "config"
    # Per expression class of T: the least calibrated log-odds R must reach (None: the class is unjudgeable);
    # None as a whole: the calibrated class check is off (qc.expression.calibrate false, or no calibration).
    expression_class_thresholds: dict[str, float | None] | None = None
    expression_calibration_sha256: str | None = None
    max_mouth_realism: float | None = None  # None: the realism check is off
    mouth_thresholds_source: str = "config"  # "config", "calibrated" (qc/mouth_calibration.py) or "uncalibrated"
    max_mouth_reference_diff: float | None = None  # None: the reference check is off (calibrated runs only)
    max_mouth_damage: float | None = None  # None: the damage detector is off (calibrated runs only)
    max_mouth_tint: float | None = None  # None: the tint check is off (on for a calibrated greyscale corpus)

    @classmethod
    def from_config(cls, qc: QCConfig) -> Thresholds:
        """The config's thresholds; a mouth threshold left null (calibrated per run, qc/mouth_calibration.py)
        takes its shipped fallback here."""
        e, m = qc.expression, qc.mouth

        def mouth(value: float | None, fallback: float) -> float:
            return fallback if value is None else value

        return cls(qc.identity.max_leak_similarity, qc.identity.min_swap_similarity, e.max_distance,
                   qc.quality.min_sharpness, qc.identity.backend,
                   qc.identity.min_margin if qc.identity.min_margin is not None else FALLBACK_MARGIN,
                   e.max_prob_distance,
                   e.min_gain, e.min_carrier_distance, e.max_lazy_distance, e.min_contrast, m.open_aspect,
                   m.closed_aspect, m.teeth_visible, m.teeth_absent, mouth(m.max_teeth_closed, cls.max_teeth_closed),
                   mouth(m.max_lip_line_whiteness, cls.max_lip_line_whiteness), mouth(m.max_seam, cls.max_mouth_seam),
                   mouth(m.min_sharpness_ratio, cls.min_mouth_sharpness_ratio), max_mouth_realism=m.max_realism,
                   max_mouth_tint=m.max_tint)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Thresholds:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


@dataclass(frozen=True)
class Scores:
    face_found: bool
    id_sim_rt: float | None = None
    id_sim_rj: float | None = None
    expr_dist_rt: float | None = None
    sharpness: float | None = None
    id_margin_ji: float | None = None  # sim(R, j) - sim(R, i), gallery centroids
    id_margin_j: float | None = None  # sim(R, j) - max over gallery identities k != j of sim(R, k)
    expr_prob_dist_rt: float | None = None  # total variation, learned probabilities R vs T
    expr_prob_dist_ct: float | None = None  # carrier vs T
    expr_prob_dist_rc: float | None = None  # R vs carrier
    expr_gain: float | None = None  # (d_ct - d_rt) / d_ct
    expr_contrast_st: float | None = None  # R past the S/T midpoint towards T (qc/expression_score.py)
    r_mouth_aspect: float | None = None
    t_mouth_aspect: float | None = None
    r_teeth: float | None = None
    t_teeth: float | None = None
    r_lip_line: float | None = None  # lip-line whiteness of R (qc/mouth.py)
    mouth_seam: float | None = None
    mouth_sharpness_ratio: float | None = None
    expr_class: str | None = None  # T's expression class (the corpus label, else the net's)
    expr_class_score: float | None = None  # R's calibrated log-odds of showing expr_class
    mouth_realism: float | None = None  # distance of R's mouth to the run's real mouths (qc/mouth_realism.py)
    # artifacts of R's mouth beyond its reference, the carrier photo (qc/mouth_reference.py)
    mouth_reference_diff: float | None = None
    mouth_damage: float | None = None  # the run's damage detector's log-odds for R's mouth (qc/mouth_detector.py)
    mouth_tint: float | None = None  # chroma of R's most coloured mouth spot over its perioral skin's (qc/mouth.py)


def _identity(s: Scores, t: Thresholds) -> list[str]:
    out = []
    leak = (s.id_margin_ji is not None and s.id_margin_ji < t.min_identity_margin) or \
        (s.id_sim_rt is not None and t.max_leak_similarity is not None and s.id_sim_rt > t.max_leak_similarity)
    if leak:
        out.append(REASON_IDENTITY_LEAK)
    elif s.id_margin_j is not None and s.id_margin_j < t.min_identity_margin:
        out.append(REASON_IDENTITY_AMBIGUOUS)
    if s.id_sim_rj is not None and t.min_swap_similarity is not None and s.id_sim_rj < t.min_swap_similarity:
        out.append(REASON_SWAP_FAILED)
    return out


def _expression(s: Scores, t: Thresholds) -> list[str]:
    out = []
    if t.expression_class_thresholds is not None:
        threshold = t.expression_class_thresholds.get(s.expr_class or "")
        if threshold is None:
            out.append(REASON_EXPRESSION_UNJUDGEABLE)
        elif s.expr_class_score is None or s.expr_class_score < threshold:
            out.append(REASON_EXPRESSION_NOT_RECOGNISED)
    if s.expr_dist_rt is not None and t.max_expression_distance is not None and \
            s.expr_dist_rt > t.max_expression_distance:
        out.append(REASON_EXPRESSION_LOST)
    if s.expr_prob_dist_rt is not None and t.max_expression_prob_distance is not None and \
            s.expr_prob_dist_rt > t.max_expression_prob_distance:
        out.append(REASON_EXPRESSION_MISMATCH)
    if s.expr_prob_dist_ct is not None and s.expr_prob_dist_ct >= t.min_carrier_distance:  # a gain is due
        if s.expr_prob_dist_rc is not None and s.expr_prob_dist_rc < t.max_lazy_distance:
            out.append(REASON_LAZY_EDIT)
        elif s.expr_gain is not None and s.expr_gain < t.min_expression_gain:
            out.append(REASON_EXPRESSION_NOT_GAINED)
    if s.expr_contrast_st is not None and t.min_expression_contrast is not None and \
            s.expr_contrast_st < t.min_expression_contrast:
        out.append(REASON_EXPRESSION_NEARER_S)
    return out


def _state(value: float, on: float, off: float) -> int:
    """1 clearly on, -1 clearly off, 0 in the band between (agrees with both)."""
    return 1 if value >= on else -1 if value < off else 0


def _mouth(s: Scores, t: Thresholds) -> list[str]:
    out = []
    if s.r_mouth_aspect is not None and s.r_mouth_aspect < t.mouth_closed_aspect and (
            (s.r_teeth is not None and s.r_teeth > t.max_teeth_closed)
            or (s.r_lip_line is not None and s.r_lip_line > t.max_lip_line_whiteness)):
        out.append(REASON_GHOST_TEETH)
    if None not in (s.r_mouth_aspect, s.t_mouth_aspect, s.r_teeth, s.t_teeth):
        r_open = _state(s.r_mouth_aspect, t.mouth_open_aspect, t.mouth_closed_aspect)  # type: ignore[arg-type]
        t_open = _state(s.t_mouth_aspect, t.mouth_open_aspect, t.mouth_closed_aspect)  # type: ignore[arg-type]
        r_teeth = _state(s.r_teeth, t.teeth_visible, t.teeth_absent)  # type: ignore[arg-type]
        t_teeth = _state(s.t_teeth, t.teeth_visible, t.teeth_absent)  # type: ignore[arg-type]
        if r_open * t_open < 0 or r_teeth * t_teeth < 0:
            out.append(REASON_MOUTH_STATE)
    if s.mouth_seam is not None and s.mouth_seam > t.max_mouth_seam:
        out.append(REASON_MOUTH_SEAM)
    if s.mouth_sharpness_ratio is not None and s.mouth_sharpness_ratio < t.min_mouth_sharpness_ratio:
        out.append(REASON_MOUTH_BLUR)
    if s.mouth_realism is not None and t.max_mouth_realism is not None and s.mouth_realism > t.max_mouth_realism:
        out.append(REASON_MOUTH_UNREAL)
    if (s.mouth_reference_diff is not None and t.max_mouth_reference_diff is not None
            and s.mouth_reference_diff > t.max_mouth_reference_diff):
        out.append(REASON_MOUTH_REFERENCE)
    if s.mouth_damage is not None and t.max_mouth_damage is not None and s.mouth_damage > t.max_mouth_damage:
        out.append(REASON_MOUTH_DAMAGE)
    if s.mouth_tint is not None and t.max_mouth_tint is not None and s.mouth_tint > t.max_mouth_tint:
        out.append(REASON_MOUTH_TINT)
    return out


def failed_checks(s: Scores, t: Thresholds) -> list[str]:
    if not s.face_found:
        return [REASON_NO_FACE]
    reasons = []
    if s.sharpness is not None and s.sharpness < t.min_sharpness:
        reasons.append(REASON_BLURRY)
    return reasons + _identity(s, t) + _expression(s, t) + _mouth(s, t)


SCORE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Scores))


@dataclass(frozen=True)
class Check:
    """One thresholded score of the decision, for everything that shows a decision (report, contact sheets,
    dataset card, exports): the score column, the Thresholds field it is compared with, and the reason code."""

    score: str  # a Scores field / qc column
    threshold: str  # a Thresholds field
    rule: str  # "max": fails when score > threshold; "min": fails when score < threshold
    reason: str
    title: str


DECIDING_CHECKS: tuple[Check, ...] = (
    Check("sharpness", "min_sharpness", "min", REASON_BLURRY, "sharpness of R"),
    Check("expr_class_score", "expression_class_thresholds", "min", REASON_EXPRESSION_NOT_RECOGNISED,
          "expression: calibrated log-odds that R shows the class of T"),
    Check("id_margin_ji", "min_identity_margin", "min", REASON_IDENTITY_LEAK, "identity margin sim(R,j) - sim(R,i)"),
    Check("id_margin_j", "min_identity_margin", "min", REASON_IDENTITY_AMBIGUOUS,
          "identity margin over the nearest other identity"),
    Check("id_sim_rt", "max_leak_similarity", "max", REASON_IDENTITY_LEAK, "identity leak: sim(R, T)"),
    Check("id_sim_rj", "min_swap_similarity", "min", REASON_SWAP_FAILED, "swap success: sim(R, j)"),
    Check("expr_dist_rt", "max_expression_distance", "max", REASON_EXPRESSION_LOST, "landmark expression distance"),
    Check("expr_prob_dist_rt", "max_expression_prob_distance", "max", REASON_EXPRESSION_MISMATCH,
          "expression probability distance(R, T)"),
    Check("expr_contrast_st", "min_expression_contrast", "min", REASON_EXPRESSION_NEARER_S,
          "expression contrast: R past the S/T midpoint"),
    Check("mouth_seam", "max_mouth_seam", "max", REASON_MOUTH_SEAM, "mouth seam"),
    Check("mouth_sharpness_ratio", "min_mouth_sharpness_ratio", "min", REASON_MOUTH_BLUR, "mouth sharpness ratio"),
    Check("mouth_realism", "max_mouth_realism", "max", REASON_MOUTH_UNREAL,
          "mouth realism: distance to the run's real mouths"),
    Check("mouth_reference_diff", "max_mouth_reference_diff", "max", REASON_MOUTH_REFERENCE,
          "mouth vs its reference: artifacts R has beyond the photo it was made from"),
    Check("mouth_damage", "max_mouth_damage", "max", REASON_MOUTH_DAMAGE,
          "mouth damage: the run's detector of synthetic mouth artifacts"),
    Check("mouth_tint", "max_mouth_tint", "max", REASON_MOUTH_TINT,
          "mouth tint: colour in R's mouth where the corpus is greyscale"),
)


def applied_threshold(check: Check, thresholds: dict, row: dict | None = None) -> float | None:
    """The threshold `check` applied to a row, from the row's thresholds (a `Thresholds` as a dict): None when
    the check was off. A per-class threshold (a dict keyed by T's expression class) is looked up with the row's
    `expression`."""
    value = thresholds.get(check.threshold)
    if isinstance(value, dict):
        row = row or {}
        return value.get(row.get("expr_class") or row.get("expression") or "")
    return value


def check_passes(check: Check, score: float | None, threshold: float | None) -> bool | None:
    """None when the score or threshold is missing (the check did not decide)."""
    if score is None or threshold is None:
        return None
    return score <= threshold if check.rule == "max" else score >= threshold
