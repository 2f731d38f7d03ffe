"""Pairing uses the expression net's class where the corpus has no label (S and carrier choice only)."""

from __future__ import annotations

import pyarrow as pa

from pipeline.planning.rules import with_predicted_labels
from stages.face.expression_net import EXPRESSION_CLASSES


def _probs(k: int) -> list[float]:
    return [0.9 if c == k else 0.1 / 6 for c in range(len(EXPRESSION_CLASSES))]


def test_missing_labels_are_predicted_and_given_ones_kept():
    src = pa.table({"expression_probs": [_probs(1), _probs(0), None, _probs(6)]})
    labels = ["smiling", None, None, None]
    assert with_predicted_labels(labels, src) == ["smiling", "neutral", None, "surprised"]


def test_without_the_column_or_with_every_label_nothing_changes():
    assert with_predicted_labels([None, "a"], pa.table({"x": [1, 2]})) == [None, "a"]
    src = pa.table({"expression_probs": [_probs(1), _probs(2)]})
    assert with_predicted_labels(["neutral", "smiling"], src) == ["neutral", "smiling"]
