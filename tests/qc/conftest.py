"""The face fixtures (dlib detector/embedder, demo faces) for the QC tests; the London set is the shared
`london_faces` fixture of tests/conftest.py."""

import numpy as np
import pytest

from stages.face.expression import expression_descriptor
from tests.face.conftest import demo_face, detector, embedder  # noqa: F401


@pytest.fixture(scope="session")
def london_features(london_faces):
    """identity, label, net probabilities and landmark descriptors of the London photos."""
    from stages.face.learned_expression import LearnedExpression
    faces = [f for by_expr in london_faces.values() for f in by_expr.values()]
    probs = LearnedExpression().probabilities([f.image for f in faces], [f.landmarks68 for f in faces])
    ident = np.asarray([f.identity for f in faces], dtype=object)
    labels = np.asarray([f.expression for f in faces], dtype=object)
    return ident, labels, probs.astype(np.float64), np.stack([expression_descriptor(f.landmarks68) for f in faces])
