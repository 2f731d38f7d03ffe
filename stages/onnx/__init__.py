"""ONNX face models users bring (FaceFusion swappers, insightface ArcFace/SCRFD): registry, files, backends."""
