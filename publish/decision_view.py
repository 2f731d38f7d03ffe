"""How every published page shows the checks that decide (qc/decide.py DECIDING_CHECKS): each check's score,
rule and the threshold it applied, "off" where this run has none. The report, the contact sheets and the dataset
card all read these, so a check added to DECIDING_CHECKS shows up everywhere without touching publish/."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qc.decide import DECIDING_CHECKS, Check, applied_threshold, check_passes

OFF = "off (not calibrated/separable on this corpus)"
RULE_SIGN = {"max": "≤", "min": "≥"}  # what a passing score is, relative to the threshold
# Identity scores are cosines (margins compare in units of 0.1); other scores relative to their threshold.
_COSINE_SCALE = 0.1


@dataclass(frozen=True)
class CheckView:
    """One check as a page shows it: title, score column, rule and threshold as text."""

    check: Check
    threshold: float | dict | None  # as the thresholds carry it: a number, per-class numbers, or None (off)

    @property
    def off(self) -> bool:
        if isinstance(self.threshold, dict):
            return all(v is None for v in self.threshold.values())
        return self.threshold is None

    @property
    def threshold_text(self) -> str:
        sign = RULE_SIGN[self.check.rule]
        if isinstance(self.threshold, dict):
            per = [f"{k}: {OFF_SHORT if v is None else f'{sign} {v:g}'}" for k, v in sorted(self.threshold.items())]
            return "per class of T: " + "; ".join(per) if per else OFF
        return OFF if self.threshold is None else f"{sign} {self.threshold:g}"

    def lines(self) -> list[tuple[str, float]]:
        """(label, value) of every threshold to draw on the score's histogram."""
        if isinstance(self.threshold, dict):
            return [(str(k), float(v)) for k, v in sorted(self.threshold.items()) if v is not None]
        return [] if self.threshold is None else [("", float(self.threshold))]


OFF_SHORT = "off"


def check_views(thresholds: dict) -> list[CheckView]:
    """Every deciding check with the threshold a thresholds dict (a `Thresholds` as JSON) gives it."""
    return [CheckView(c, thresholds.get(c.threshold)) for c in DECIDING_CHECKS]


def failed(check: Check, score: float | None, thresholds: dict, expression: str | None) -> bool:
    """True when this check's score is past the threshold it applied to a row of T's `expression`."""
    th = applied_threshold(check, thresholds, {"expression": expression})
    return check_passes(check, score, th) is False


def check_margin(check: Check, score: float | None, thresholds: dict, expression: str | None) -> float | None:
    """Normalised distance of a score to its threshold on the passing side (negative: failed); None when unscored
    or the check was off."""
    th = applied_threshold(check, thresholds, {"expression": expression})
    if score is None or th is None or (isinstance(score, float) and math.isnan(score)):
        return None
    scale = _COSINE_SCALE if check.score.startswith("id_") else (abs(th) or 1.0)
    return ((th - score) if check.rule == "max" else (score - th)) / scale


def score_text(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
