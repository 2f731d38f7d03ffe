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
    max_distance: float = Field(0.12, gt=0)  # landmark descriptor distance R-T (stages/face/expression.py)
    # Learned 7-class expression net (stages/face/expression_net.py, qc/expression_score.py): total variation
    # distance between R's and T's probability vectors (0 = same, 1 = disjoint).
    max_prob_distance: float = Field(0.5, gt=0, le=1)
    # Expression gain over the carrier (the image R was made from): (d(carrier,T) - d(R,T)) / d(carrier,T).
    # Required only when the carrier's expression differs from T's by at least min_carrier_distance.
    min_gain: float = Field(0.3, le=1)
    min_carrier_distance: float = Field(0.25, ge=0, le=1)
    # A lazy edit: R's probabilities within this distance of the carrier's (while a gain was required).
    max_lazy_distance: float = Field(0.1, ge=0, le=1)
    # Contrast with S (identity i in its other expression), qc/expression_score.py::expression_contrast: R must
    # lie at least this far past the S/T midpoint towards T, in centred log-probability units (0 = nearer T's
    # expression than S's). The QC score that separates same from different expressions best on the London set
    # (pair AUC 0.90, benchmarks/bench_qc_validity.py); it needs no absolute scale, so it holds across corpora.
    min_contrast: float = Field(0.0)


class MouthQCConfig(Strict):
    """Mouth interior and artifact thresholds (qc/mouth.py), set on the London set and artifact cases built
    from it (benchmarks/bench_qc_validity.py). Open/closed and teeth shown/absent have a band between them in
    which a mouth counts as both, so R and T disagree only when one is clearly open (teeth) and one clearly not."""

    open_aspect: float = Field(0.12, ge=0)  # inner-lip opening / mouth width at or above: clearly open
    closed_aspect: float = Field(0.06, ge=0)  # below: clearly closed (may carry ghost teeth)
    teeth_visible: float = Field(0.10, ge=0, le=1)  # teeth-like share of the lip region: teeth clearly shown
    teeth_absent: float = Field(0.03, ge=0, le=1)  # below: clearly no teeth
    max_teeth_closed: float = Field(0.12, ge=0, le=1)  # teeth-like share over closed lips: ghosted teeth
    max_lip_line_whiteness: float = Field(-0.05, ge=-2, le=2)  # lip line lighter/greyer than the lips: ghost
    max_seam: float = Field(15.0, gt=0)  # grey levels of a straight step across the skin around the mouth
    min_sharpness_ratio: float = Field(0.09, ge=0)  # mouth Laplacian variance / the eye band's


class QualityQCConfig(Strict):
    min_sharpness: float = Field(20.0, ge=0)  # variance of the Laplacian on the aligned grey face


class QCConfig(Strict):
    identity: IdentityQCConfig = IdentityQCConfig()
    expression: ExpressionQCConfig = ExpressionQCConfig()
    quality: QualityQCConfig = QualityQCConfig()
    mouth: MouthQCConfig = MouthQCConfig()
    resources: StageResources = StageResources()
