"""Pick a face backend by the name in config; each backend class builds itself with from_config()."""

from __future__ import annotations

from pipeline.config import PipelineConfig
from stages.face.protocols import ExpressionTransferer, FaceDetector, IdentityEmbedder, IdentitySwapper


def build_detector(cfg: PipelineConfig) -> FaceDetector:
    if cfg.ingest.detector == "scrfd":
        from stages.onnx.scrfd import ScrfdDetector
        return ScrfdDetector.from_config(cfg)
    from stages.face.dlib_models import DlibDetector
    return DlibDetector.from_config(cfg)


def build_embedder(cfg: PipelineConfig) -> IdentityEmbedder:
    if cfg.qc.identity.backend == "arcface":
        from stages.onnx.arcface import ArcFaceEmbedder
        return ArcFaceEmbedder.from_config(cfg)
    from stages.face.dlib_models import DlibEmbedder
    return DlibEmbedder.from_config(cfg)


def build_swapper(cfg: PipelineConfig) -> IdentitySwapper:
    if cfg.identity_swap.backend == "onnx":
        from stages.onnx.swapper import OnnxSwapper
        return OnnxSwapper.from_config(cfg)
    from stages.face.classic_swap import ClassicSwapper
    return ClassicSwapper.from_config(cfg)


def build_expression_transferer(cfg: PipelineConfig) -> ExpressionTransferer:
    if cfg.expression_transfer.backend == "eadapter":
        from stages.eadapter.backend import EAdapterTransferer
        return EAdapterTransferer.from_config(cfg)
    from stages.face.landmark_warp import LandmarkWarpTransferer
    return LandmarkWarpTransferer.from_config(cfg)
