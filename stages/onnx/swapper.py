"""Identity swap with ONNX face swappers: inswapper through insightface, hyperswap/simswap as FaceFusion runs them.

inswapper_128(_fp16): insightface's `INSwapper.get(img, target_face, source_face, paste_back=True)`
unchanged (arcface_128 crop, source = normed ArcFace embedding @ emap, its own paste-back).
hyperswap_1{a,b,c}_256 and simswap_256: FaceFusion 3.x's path: 5-point similarity warp to the model's
template (cv2.estimateAffinePartial2D), BGR->RGB, (x/255 - mean)/std, source embedding per model
(normed ArcFace; or the simswap converter's output, normed), output de-normalised (hyperswap) and
clipped, pasted back through a feathered box mask, optionally min-combined with XSeg occlusion and
BiSeNet region masks. Items share one network call when the model's batch axis is dynamic.
Both paths then keep the target's expression regions (`identity_swap.keep_regions`: the expression transfer's
eyes, brows and mouth, stages/face/expression_regions.py) over the pasted-back face.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from insightface.model_zoo.inswapper import INSwapper
from insightface.utils import face_align

from stages.config import IdentitySwapConfig, ModelsConfig
from stages.face.expression_regions import DEFAULT_KEEP_REGIONS, check_regions, keep_expression_regions
from stages.face.types import DetectedFace
from stages.onnx.arcface import ArcFaceEmbedder, l2_normalize
from stages.onnx.masks import FaceParser, Occluder
from stages.onnx.model_files import ResolvedModel, resolve_model
from stages.onnx.registry import ModelSpec, get_spec
from stages.onnx.sessions import batch_dim_is_dynamic, get_insightface_model, get_session, resolve_providers
from stages.onnx.warp import box_mask, paste_back, warp_face

# (source_rgb, source_face, target_rgb, target_face)
SwapItem = tuple[np.ndarray, DetectedFace, np.ndarray, DetectedFace]


@dataclass
class _FaceLike:
    """The two attributes insightface's INSwapper.get reads from its face objects."""

    kps: np.ndarray
    normed_embedding: np.ndarray | None = None


class _ReplaySession:
    """Stands in for INSwapper's session to hand `get()` one row of a batched run (after checking its feeds)."""

    def __init__(self, prediction: np.ndarray, expected: dict[str, np.ndarray]) -> None:
        self.prediction = prediction
        self.expected = expected

    def run(self, output_names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, value in self.expected.items():
            if not np.allclose(feeds[name], value, rtol=1e-4, atol=1e-5):
                raise RuntimeError(f"batched inswapper input {name!r} differs from insightface's own "
                                   "pre-processing; insightface changed, fix OnnxSwapper._inswapper")
        return [self.prediction]


class OnnxSwapper:
    """IdentitySwapper over a registry swapper (`identity_swap.model`)."""

    def __init__(self, resolved: ResolvedModel, providers: Sequence[str], embedder: ArcFaceEmbedder,
                 converter: ResolvedModel | None = None, occluder: Occluder | None = None,
                 parser: FaceParser | None = None, mask_blur: float = 0.3,
                 mask_padding: tuple[int, int, int, int] = (0, 0, 0, 0), max_batch: int = 32,
                 keep: tuple[str, ...] = DEFAULT_KEEP_REGIONS, keep_feather: float = 0.15) -> None:
        self.spec: ModelSpec = get_spec(resolved.name)
        if self.spec.kind != "swapper":
            raise ValueError(f"{resolved.name!r} is a {self.spec.kind}, not a swapper")
        self.resolved = resolved
        self.model_id = resolved.name
        self.model_sha256 = resolved.sha256
        self.hash_override = resolved.hash_override
        self.embedder = embedder
        self.occluder = occluder
        self.parser = parser
        self.mask_blur = mask_blur
        self.mask_padding = mask_padding
        self.keep_regions = check_regions(keep)
        self.keep_feather = keep_feather
        self.inswapper: INSwapper | None = None
        if self.spec.swap_type == "inswapper":
            self.inswapper = get_insightface_model(resolved.path, providers, INSwapper)
            self.session = self.inswapper.session
        else:
            self.session = get_session(resolved.path, providers)
            names = {i.name for i in self.session.get_inputs()}
            if names != {"source", "target"}:
                raise ValueError(f"{resolved.origin}: inputs {sorted(names)}, expected 'source' and 'target'")
        self.converter: ResolvedModel | None = converter
        self.converter_session = get_session(converter.path, providers) if converter else None
        if self.spec.source_embedding == "converted_normed" and self.converter_session is None:
            raise ValueError(f"{resolved.name} needs its embedding converter ({self.spec.converter})")
        self.max_batch = max_batch if all(batch_dim_is_dynamic(self.session, i)
                                           for i in range(len(self.session.get_inputs()))) else 1

    @classmethod
    def from_config(cls, sw: IdentitySwapConfig, models: ModelsConfig) -> OnnxSwapper:
        if not sw.model:
            raise ValueError("identity_swap.model is required with backend 'onnx'")
        spec = get_spec(sw.model)
        resolved = resolve_model(models, sw.model)  # the swapper's own file is checked first
        providers = resolve_providers(models.providers)
        embedder = ArcFaceEmbedder.from_config(models, sw.embedder_model or spec.embedder)
        converter_name = sw.converter_model or spec.converter
        converter = resolve_model(models, converter_name) if converter_name else None
        occluder = Occluder.from_config(models, sw.occluder_model) if sw.occluder_model else None
        parser = FaceParser.from_config(models, sw.parser_model, sw.mask_regions) if sw.parser_model else None
        return cls(resolved, providers, embedder, converter, occluder, parser,
                   sw.mask_blur, sw.mask_padding, max(sw.resources.batch_size, 1), sw.keep_regions, sw.keep_feather)

    @property
    def components(self) -> dict[str, dict[str, object]]:
        """Every model file this swapper runs: name -> sha256 and whether a hash override admitted it."""
        parts = [self.resolved, self.embedder.resolved, self.converter,
                 self.occluder.resolved if self.occluder else None, self.parser.resolved if self.parser else None]
        return {r.name: {"sha256": r.sha256, "hash_override": r.hash_override} for r in parts if r is not None}

    # --- public API ---------------------------------------------------------------------------------

    def swap(self, source_rgb: np.ndarray, source_face: DetectedFace,
             target_rgb: np.ndarray, target_face: DetectedFace) -> np.ndarray:
        return self.swap_batch([(source_rgb, source_face, target_rgb, target_face)])[0]

    def swap_batch(self, items: Sequence[SwapItem]) -> list[np.ndarray]:
        """One RGB uint8 image per item: the target with the source's identity, same size as the target."""
        if not items:
            return []
        if self.keep_regions and any(tf.landmarks68 is None for _, _, _, tf in items):
            raise ValueError("identity_swap.keep_regions needs 68 landmarks on the target face "
                             "(DetectedFace.landmarks68 is None); set keep_regions: [] to keep none")
        sources = self.source_embeddings([(s, f) for s, f, _, _ in items])
        out: list[np.ndarray] = []
        for start in range(0, len(items), self.max_batch):
            chunk = items[start:start + self.max_batch]
            emb = sources[start:start + self.max_batch]
            if self.inswapper is not None:
                out.extend(self._inswapper(chunk, emb))
            else:
                out.extend(self._facefusion(chunk, emb))
        return [self._keep_expression(img, item) for img, item in zip(out, items, strict=True)]

    def _keep_expression(self, swapped: np.ndarray, item: SwapItem) -> np.ndarray:
        """The swapped image with the target's expression regions (its eyes, brows, mouth) kept, feathered."""
        _, _, target_rgb, target_face = item
        if not self.keep_regions:
            return swapped
        assert target_face.landmarks68 is not None
        return keep_expression_regions(swapped, np.asarray(target_rgb, np.uint8), target_face.landmarks68,
                                       self.keep_regions, self.keep_feather)

    def source_embeddings(self, faces: Sequence[tuple[np.ndarray, DetectedFace]]) -> np.ndarray:
        """What each model gets as identity: normed ArcFace (inswapper maps it through emap itself,
        hyperswap uses it as is), or the converter's output normed (simswap)."""
        if self.spec.source_embedding == "converted_normed":
            raw = self.embedder.raw_batch(faces)
            assert self.converter_session is not None
            name = self.converter_session.get_inputs()[0].name
            if batch_dim_is_dynamic(self.converter_session):
                converted = self.converter_session.run(None, {name: raw})[0]
            else:
                converted = np.concatenate([self.converter_session.run(None, {name: r[None]})[0] for r in raw])
            return l2_normalize(np.asarray(converted, np.float32).reshape(len(raw), -1))
        return self.embedder.embed_batch(faces)

    # --- inswapper: insightface's own get() ------------------------------------------------------

    def _inswapper(self, items: Sequence[SwapItem], normed: np.ndarray) -> list[np.ndarray]:
        model = self.inswapper
        assert model is not None
        bgrs = [np.ascontiguousarray(t[:, :, ::-1]) for _, _, t, _ in items]
        targets = [_FaceLike(np.asarray(tf.keypoints5, np.float32)) for _, _, _, tf in items]
        sources = [_FaceLike(np.zeros(0), e.astype(np.float32)) for e in normed]
        if len(items) == 1:
            return [np.ascontiguousarray(model.get(bgrs[0], targets[0], sources[0], paste_back=True)[:, :, ::-1])]
        size = model.input_size[0]
        crops = [face_align.norm_crop2(b, t.kps, size)[0] for b, t in zip(bgrs, targets, strict=False)]
        blob = cv2.dnn.blobFromImages(crops, 1.0 / model.input_std, model.input_size,
                                      (model.input_mean,) * 3, swapRB=True)
        latent = normed.astype(np.float32) @ model.emap
        latent /= np.linalg.norm(latent, axis=1, keepdims=True)
        preds = model.session.run(model.output_names, {model.input_names[0]: blob,
                                                        model.input_names[1]: latent.astype(np.float32)})[0]
        out = []
        for i in range(len(items)):
            one = copy.copy(model)
            one.session = _ReplaySession(preds[i:i + 1], {model.input_names[0]: blob[i:i + 1],
                                                          model.input_names[1]: latent[i:i + 1]})
            out.append(np.ascontiguousarray(one.get(bgrs[i], targets[i], sources[i], paste_back=True)[:, :, ::-1]))
        return out

    # --- hyperswap / simswap: FaceFusion's path ---------------------------------------------------

    def _prepare(self, crop_bgr: np.ndarray) -> np.ndarray:
        x = crop_bgr[:, :, ::-1].astype(np.float32) / 255.0
        x = np.asarray((x - np.asarray(self.spec.mean, np.float32)) / np.asarray(self.spec.std, np.float32),
                       np.float32)
        return x.transpose(2, 0, 1)

    def _restore(self, out: np.ndarray) -> np.ndarray:
        """Network output (C, H, W) -> BGR float32 crop in [0, 255]."""
        y = np.asarray(out, np.float32).transpose(1, 2, 0)
        if self.spec.denormalize_output:
            y = y * np.asarray(self.spec.std, np.float32) + np.asarray(self.spec.mean, np.float32)
        return np.ascontiguousarray(y.clip(0, 1)[:, :, ::-1] * 255)

    def _facefusion(self, items: Sequence[SwapItem], sources: np.ndarray) -> list[np.ndarray]:
        assert self.spec.template is not None
        size = self.spec.input_size
        frames, crops, matrices, masks = [], [], [], []
        for _, _, target_rgb, target_face in items:
            bgr = np.ascontiguousarray(target_rgb[:, :, ::-1])
            crop, matrix = warp_face(bgr, target_face.keypoints5, self.spec.template, size)
            crop_masks = [box_mask(size, self.mask_blur, self.mask_padding)]
            if self.occluder is not None:
                crop_masks.append(self.occluder(crop))
            frames.append(bgr)
            crops.append(crop)
            matrices.append(matrix)
            masks.append(crop_masks)
        target = np.stack([self._prepare(c) for c in crops]).astype(np.float32)
        swapped = self.session.run(None, {"source": sources.astype(np.float32), "target": target})[0]
        out = []
        for bgr, matrix, crop_masks, y in zip(frames, matrices, masks, swapped, strict=False):
            crop = self._restore(y)
            if self.parser is not None:
                crop_masks = crop_masks + [self.parser(crop)]
            mask = np.minimum.reduce(crop_masks).clip(0, 1)
            out.append(np.ascontiguousarray(paste_back(bgr, crop, mask, matrix)[:, :, ::-1]))
        return out

    def crop_mask(self, target_rgb: np.ndarray, target_face: DetectedFace) -> tuple[np.ndarray, np.ndarray]:
        """The paste-back mask in crop coordinates and the frame -> crop matrix (box and occlusion parts)."""
        assert self.spec.template is not None
        bgr = np.ascontiguousarray(target_rgb[:, :, ::-1])
        crop, matrix = warp_face(bgr, target_face.keypoints5, self.spec.template, self.spec.input_size)
        parts = [box_mask(self.spec.input_size, self.mask_blur, self.mask_padding)]
        if self.occluder is not None:
            parts.append(self.occluder(crop))
        return np.minimum.reduce(parts).clip(0, 1), matrix
