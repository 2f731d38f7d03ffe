"""Pick a face backend by the name in its config section; each backend class builds itself with from_config()."""

from __future__ import annotations

from core.location import Location
from stages.config import ExpressionTransferConfig, IdentityModelConfig, IdentitySwapConfig, IngestConfig, ModelsConfig
from stages.face.protocols import ExpressionTransferer, FaceDetector, IdentityEmbedder, IdentitySwapper


def build_detector(ingest: IngestConfig, models: ModelsConfig) -> FaceDetector:
    if ingest.detector == "scrfd":
        from stages.onnx.scrfd import ScrfdDetector
        return ScrfdDetector.from_config(ingest, models)
    from stages.face.dlib_models import DlibDetector
    return DlibDetector.from_config(ingest)


def build_embedder(identity: IdentityModelConfig, models: ModelsConfig) -> IdentityEmbedder:
    if identity.backend == "arcface":
        from stages.onnx.arcface import ArcFaceEmbedder
        return ArcFaceEmbedder.from_config(models, identity.model)
    from stages.face.dlib_models import DlibEmbedder
    return DlibEmbedder.from_config()


def build_swapper(swap: IdentitySwapConfig, models: ModelsConfig) -> IdentitySwapper:
    if swap.backend == "onnx":
        from stages.onnx.swapper import OnnxSwapper
        return OnnxSwapper.from_config(swap, models)
    from stages.face.classic_swap import ClassicSwapper
    return ClassicSwapper.from_config(swap)


def build_expression_transferer(transfer: ExpressionTransferConfig,
                                storage: Location | None = None) -> ExpressionTransferer:
    """The configured transferer; `storage` (the run folder) gives the options that reach `transfer.adapter`."""
    if transfer.backend == "eadapter":
        from stages.eadapter.backend import EAdapterTransferer
        return EAdapterTransferer.from_config(transfer, storage=storage)
    from stages.face.landmark_warp import LandmarkWarpTransferer
    return LandmarkWarpTransferer.from_config(transfer)
