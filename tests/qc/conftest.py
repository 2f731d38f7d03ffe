"""The face fixtures (dlib detector/embedder, demo faces) for the QC tests; the London set is the shared
`london_faces` fixture of tests/conftest.py."""

from tests.face.conftest import demo_face, detector, embedder  # noqa: F401
