"""The face fixtures (dlib detector/embedder, demo faces) for the QC tests."""

from tests.face.conftest import demo_face, detector, embedder  # noqa: F401
