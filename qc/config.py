"""QC's config section: which identity model judges R, and the thresholds of every check."""

from __future__ import annotations

from pydantic import Field

from core.config import StageResources, Strict
from stages.config import IdentityModelConfig


class IdentityQCConfig(IdentityModelConfig):
    """Which identity model QC (and ingest) embed with, and the identity thresholds."""

    # cosine similarities; R must not look like T's identity and must look like the swap source.
    # null (the default): calibrated per run from the run's own sources (qc/identity_calibration.py): leak at
    # the similarity calibration_frr of same-identity pairs fall below, swap at the one calibration_far of
    # different-identity pairs reach; recorded in run.json and in every qc row. When those two do not separate
    # the run's sources both checks are off and the gallery test below decides. An explicit value overrides.
    # dlib on the London set: different people p99 0.916, same person min 0.953.
    max_leak_similarity: float | None = Field(None, ge=-1, le=1)
    min_swap_similarity: float | None = Field(None, ge=-1, le=1)
    calibration_far: float = Field(0.01, ge=0, lt=1)
    calibration_frr: float = Field(0.01, ge=0, lt=1)
    # Gallery test (qc/identity_gallery.py): R must be identified as j against the run's identities (i, j and
    # every other), by this margin of cosine similarity over i (else identity_leak) and over any other
    # identity (else identity_ambiguous). null (the default): calibrated per run (qc/identity_margin.py) so that
    # at most margin_max_false_reject of the run's *real* photos of j fail it (each scored leave-one-out against
    # the gallery), never below 0; recorded in run.json and in every qc row. An explicit value overrides (0.02
    # was the fixed default: it rejected 14 % of real photos on a 7-expression greyscale set, 0 % on London).
    min_margin: float | None = Field(None, ge=0, le=2)
    margin_max_false_reject: float = Field(0.01, ge=0, lt=1)


class ExpressionQCConfig(Strict):
    """The expression decision. By default it is calibrated per run and per class from the run's own labelled
    sources (qc/expression_calibration.py, qc/selftest.py): R must be recognised as T's expression class by the
    run's identity-relative discriminant, at a threshold that lets at most `max_false_pass` of real
    wrong-expression photos through (leave-one-identity-out). The fixed checks below are off by default (null);
    set one to add it to the decision (the self-test then measures the combination)."""

    calibrate: bool = True  # false: no calibrated class check (only the fixed checks below decide)
    max_false_pass: float = Field(0.05, gt=0, lt=1)  # wrong-expression pass rate each class threshold targets
    # A class whose right-expression pass rate at that target is below this is unjudgeable on the corpus: its
    # targets are not planned (a reason row each) unless judge_unjudgeable is true (then its threshold is used).
    min_class_recall: float = Field(0.5, ge=0, le=1)
    min_class_photos: int = Field(10, ge=2)  # fewer labelled photos of a class: unjudgeable (fails closed)
    min_class_identities: int = Field(3, ge=2)  # photos from fewer identities: unjudgeable
    judge_unjudgeable: bool = False
    selftest_max_identities: int = Field(500, ge=2)  # the self-test's sample (bounded: its cost does not grow)
    max_distance: float | None = Field(None, gt=0)  # landmark descriptor distance R-T (stages/face/expression.py)
    # Learned 7-class expression net (stages/face/expression_net.py, qc/expression_score.py): total variation
    # distance between R's and T's probability vectors (0 = same, 1 = disjoint).
    max_prob_distance: float | None = Field(None, gt=0, le=1)
    # Expression gain over the carrier (the image R was made from): (d(carrier,T) - d(R,T)) / d(carrier,T).
    # Required only when the carrier's expression differs from T's by at least min_carrier_distance.
    min_gain: float = Field(0.3, le=1)
    min_carrier_distance: float = Field(0.25, ge=0, le=1)
    # A lazy edit: R's probabilities within this distance of the carrier's (while a gain was required).
    max_lazy_distance: float = Field(0.1, ge=0, le=1)
    # Contrast with S (identity i in its other expression), qc/expression_score.py::expression_contrast: R must
    # lie at least this far past the S/T midpoint towards T, in centred log-probability units (0 = nearer T's
    # expression than S's). null: off.
    min_contrast: float | None = None


class MouthQCConfig(Strict):
    """Mouth interior and artifact thresholds (qc/mouth.py, qc/mouth_realism.py, qc/mouth_reference.py).
    Open/closed and teeth shown/absent have a band between them in which a mouth counts as both, so R and T
    disagree only when one is clearly open (teeth) and one clearly not. The artifact thresholds (null, the default)
    are calibrated per run on the run's own real mouths (qc/mouth_calibration.py) so that all mouth checks together
    flag at most calibration_target of them; an explicit value overrides. Without enough real mouths the shipped
    fallbacks (in brackets) apply and the realism, reference and damage checks are off."""

    open_aspect: float = Field(0.12, ge=0)  # inner-lip opening / mouth width at or above: clearly open
    closed_aspect: float = Field(0.06, ge=0)  # below: clearly closed (may carry ghost teeth)
    teeth_visible: float = Field(0.10, ge=0, le=1)  # teeth-like share of the lip region: teeth clearly shown
    teeth_absent: float = Field(0.03, ge=0, le=1)  # below: clearly no teeth
    max_teeth_closed: float | None = Field(None, ge=0, le=1)  # teeth-like share over closed lips: ghost [0.12]
    max_lip_line_whiteness: float | None = Field(None, ge=-2, le=2)  # lip line lighter/greyer than lips [-0.05]
    max_seam: float | None = Field(None, gt=0)  # grey levels of a straight step across the skin round the mouth [15]
    min_sharpness_ratio: float | None = Field(None, ge=0)  # mouth Laplacian variance / the eye band's [0.09]
    # realism: distance of R's mouth to the run's real mouths (qc/mouth_realism.py) in robust standard
    # deviations; above it: mouth_unrealistic [off]
    max_realism: float | None = Field(None, gt=0)
    # reference check (qc/mouth_reference.py): R's mouth against the carrier, the real photo of j it was made from;
    # the score is how far R's specks, fragments, outline or edges exceed the carrier's, in units of the same
    # difference between two real photos of one identity (the run's sources); above it:
    # mouth_differs_from_reference. null: calibrated per run with the other thresholds (needs 100 sources whose
    # identity has another photo; else off). check_reference false turns it off.
    max_reference_diff: float | None = Field(None, gt=0)
    check_reference: bool = True
    # damage detector (qc/mouth_detector.py): fitted per run on the run's legit R against synthetic artifacts
    # painted on them; the score is its log-odds of damage; above it: mouth_damaged (null: calibrated, needs 100
    # legit pairs; else off; and on only where it earns its budget share: the run's own synthetic damage is caught
    # more with it than without, cross-validated over identity folds, run.json mouth_calibration.detector_gate).
    # check_damage false turns it off; an explicit max_damage turns it on.
    max_damage: float | None = None
    check_damage: bool = True
    # tint (qc/mouth.py mouth_tint): chroma of R's most coloured mouth spot over its perioral skin's; above it:
    # mouth_tinted. null: calibrated, on for a greyscale corpus only (beyond every real mouth, at least 4), off on a
    # colour one. check_tint false turns it off; an explicit max_tint turns it on for any corpus.
    max_tint: float | None = Field(None, ge=0)
    check_tint: bool = True
    calibration_target: float = Field(0.02, gt=0, lt=1)  # share of real mouths all mouth checks may flag
    calibration_sample: int = Field(300, ge=1)  # real mouths measured (a deterministic sample of the sources)


class QualityQCConfig(Strict):
    min_sharpness: float = Field(20.0, ge=0)  # variance of the Laplacian on the aligned grey face


class QCConfig(Strict):
    identity: IdentityQCConfig = IdentityQCConfig()
    expression: ExpressionQCConfig = ExpressionQCConfig()
    quality: QualityQCConfig = QualityQCConfig()
    mouth: MouthQCConfig = MouthQCConfig()
    resources: StageResources = StageResources()
