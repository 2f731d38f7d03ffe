"""Ingest: decode a corpus image, find exactly one usable face, align it, embed it, describe its expression."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

from core.location import Location
from manifests.artifacts import ArtifactStore
from manifests.schemas import SOURCES
from stages.base import RowRejected, RowwiseStage
from stages.config import IngestConfig
from stages.face.align import ffhq_align
from stages.face.backends import build_detector, build_embedder
from stages.face.expression import expression_descriptor
from stages.face.image_io import ImageRejected, decode_image
from stages.face.learned_expression import LearnedExpression
from stages.face.quality import sharpness

_INPUTS = ("input_key", "identity", "expression", "path", "raw_name", "attempt")


def source_id_for(identity: str, input_key: str, file_sha256: str) -> str:
    return hashlib.sha256(f"{identity}\0{input_key}\0{file_sha256}".encode()).hexdigest()[:16]


class IngestStage(RowwiseStage):
    name = "ingest"
    input_columns = _INPUTS
    output_fields = tuple(f for f in SOURCES if f.name not in _INPUTS)

    config_section = "ingest"
    config: IngestConfig

    def setup(self) -> None:
        self.detector = build_detector(self.config, self.context.models)
        self.embedder = build_embedder(self.context.identity_model, self.context.models)
        self.expression = LearnedExpression()
        self.artifacts = ArtifactStore(self.context.run)
        self.corpus = self.context.corpus or Location(".")
        self.fingerprint = self.context.fingerprint
        self.run_id = self.context.run_id

    def _read(self, url: str) -> bytes:
        ing = self.config
        try:
            file = self.corpus.at(url)
            fs, path = file.fs, file.path
            size = fs.size(path)
            if size is not None and size > ing.max_file_bytes:
                raise RowRejected("file_too_large", f"{size} bytes > ingest.max_file_bytes={ing.max_file_bytes}")
            return fs.cat_file(path)
        except FileNotFoundError:
            raise RowRejected("missing_file", url) from None
        except (IsADirectoryError, PermissionError) as err:
            raise RowRejected("unreadable_file", f"{type(err).__name__}: {err}") from None

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        ing = self.config
        data = self._read(row["path"])
        try:
            rgb = decode_image(data, ing.max_pixels, ing.max_file_bytes)
        except ImageRejected as rej:
            raise RowRejected(rej.reason, rej.detail) from None
        faces = self.detector.detect(rgb)
        if not faces and hasattr(self.detector, "detect_small_faces"):
            faces = self.detector.detect_small_faces(rgb)  # small faces: classed face_too_small below
        if not faces:
            raise RowRejected("no_face", f"no face found in {rgb.shape[1]}x{rgb.shape[0]} image")
        usable = [f for f in faces if f.short_side >= ing.min_face_size]
        if not usable:
            biggest = max(f.short_side for f in faces)
            raise RowRejected("face_too_small",
                              f"largest face {biggest:.0f}px < ingest.min_face_size={ing.min_face_size}")
        if len(usable) > 1:
            raise RowRejected("multiple_faces", f"{len(usable)} faces of at least {ing.min_face_size}px")
        face = usable[0]
        if face.landmarks68 is None:
            raise RowRejected("no_landmarks", f"detector {self.detector.model_id} gave no 68-point landmarks")
        aligned = ffhq_align(rgb, face.landmarks68, ing.crop_size)
        embedding = self.embedder.embed(rgb, face)
        file_sha = hashlib.sha256(data).hexdigest()
        source_id = source_id_for(row["identity"], row["input_key"], file_sha)
        url, aligned_sha = self.artifacts.put("aligned", source_id, aligned.image)
        return dict(
            source_id=source_id,
            file_sha256=file_sha,
            width=int(rgb.shape[1]),
            height=int(rgb.shape[0]),
            face_box=np.asarray(face.box, np.float32).tolist(),
            aligned_path=url,
            aligned_sha256=aligned_sha,
            landmarks68=np.asarray(aligned.landmarks68, np.float32).reshape(-1).tolist(),
            keypoints5=np.asarray(aligned.keypoints5, np.float32).reshape(-1).tolist(),
            embedding=np.asarray(embedding, np.float32).tolist(),
            embedding_model=self.embedder.model_id,
            embedding_model_sha256=self.embedder.model_sha256,
            detector_model=self.detector.model_id,
            detector_model_sha256=self.detector.model_sha256,
            expression_descriptor=np.asarray(expression_descriptor(aligned.landmarks68), np.float32).tolist(),
            sharpness=sharpness(aligned.image),
            run_id=self.run_id,
            config_fingerprint=self.fingerprint,
            expression_probs=self.expression.probabilities([aligned.image], [aligned.landmarks68])[0].tolist(),
            expression_net_model=self.expression.model_id,
            expression_net_sha256=self.expression.model_sha256,
        )

    def output_schema(self) -> pa.Schema:
        return pa.schema(list(self.output_fields))
