"""The ONNX models the pipeline can run: file names, pinned sha256, and how each one is fed and read.

Nothing here is downloaded. Users put the files they already have under `models.root` (see
models/README.md). A file is accepted when its sha256 is one of the `KnownFile` hashes of its model,
or equals `models.hash_overrides[<model name>]`.

Where the hashes come from: no publisher prints sha256 next to these files (FaceFusion's `.hash`
files are CRC32; insightface's zoo lists none), so each value below is the sha256 that several
independent public projects pin for the same release asset, and agree on. We could not hash the
files ourselves (no network here). A `sha256=None` means we found no such agreement: such a file is
refused until the user pins its hash in `models.hash_overrides`.

Pre/post-processing follows FaceFusion 3.x (`processors/modules/face_swapper/core.py`,
`face_helper.py`, `face_masker.py`) and insightface (`model_zoo/inswapper.py`, `arcface_onnx.py`,
`scrfd.py`, `utils/face_align.py`). Mean/std are in [0, 1] pixel units, applied after colour
conversion: x = (pixel / 255 - mean) / std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["swapper", "embedder", "detector", "converter", "occluder", "parser"]
SwapType = Literal["inswapper", "hyperswap", "simswap"]
# How the swapper's `source` input is made from the source face:
#   emap             ArcFace normed embedding @ emap (the model's LAST initializer, 512x512), re-normalised
#   arcface_normed   ArcFace embedding / ||embedding||
#   converted_normed converter(raw ArcFace embedding), then / ||.||
SourceEmbedding = Literal["emap", "arcface_normed", "converted_normed"]

# 5-point templates in [0, 1] crop units (left eye, right eye, nose, left mouth, right mouth),
# FaceFusion's WARP_TEMPLATE_SET. arcface_112_v2 * 112 is insightface's `arcface_dst`; arcface_128
# is insightface's 128-px variant of it (`estimate_norm(..., 128)`: same points, x shifted by 8 px).
TEMPLATES: dict[str, np.ndarray] = {
    "arcface_112_v1": np.array([[0.35473214, 0.45658929], [0.64526786, 0.45658929], [0.50000000, 0.61154464],
                                [0.37913393, 0.77687500], [0.62086607, 0.77687500]]),
    "arcface_112_v2": np.array([[0.34191607, 0.46157411], [0.65653393, 0.45983393], [0.50022500, 0.64050536],
                                [0.37097589, 0.82469196], [0.63151696, 0.82325089]]),
    "arcface_128": np.array([[0.36167656, 0.40387734], [0.63696719, 0.40235469], [0.50019687, 0.56044219],
                             [0.38710391, 0.72160547], [0.61507734, 0.72034453]]),
    "ffhq_512": np.array([[0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
                          [0.39308822, 0.72541100], [0.61150205, 0.72490465]]),
}

# BiSeNet (CelebAMask-HQ) class ids that FaceFusion's region mask keeps.
FACE_MASK_REGIONS: dict[str, int] = {
    "skin": 1, "left-eyebrow": 2, "right-eyebrow": 3, "left-eye": 4, "right-eye": 5, "glasses": 6,
    "nose": 10, "mouth": 11, "upper-lip": 12, "lower-lip": 13,
}

_FF = "FaceFusion assets release"  # github.com/facefusion/facefusion-assets/releases (also HF facefusion/models-*)
_IF = "insightface model zoo release v0.7"  # github.com/deepinsight/insightface/releases/tag/v0.7


@dataclass(frozen=True)
class KnownFile:
    """One published build of a model file."""

    file_name: str
    sha256: str | None  # None: no agreed public sha256 found; pin yours in models.hash_overrides
    size: int | None  # bytes, where the pinning sources state it
    source: str  # where users get it (no download code anywhere)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Kind
    files: tuple[KnownFile, ...]  # looked for in this order under models.root
    input_size: tuple[int, int]  # (width, height) the model runs at
    layout: Literal["NCHW", "NHWC"]
    colour: Literal["RGB", "BGR"]  # channel order the network expects
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output: str  # what the (first) output means
    template: str | None = None  # 5-point alignment template of the input crop
    swap_type: SwapType | None = None
    source_embedding: SourceEmbedding | None = None
    embedder: str | None = None  # registry name of the ArcFace that feeds `source`
    converter: str | None = None  # registry name of the embedding converter (simswap)
    denormalize_output: bool = False  # output * std + mean before clipping to [0, 1]
    license: str = ""

    @property
    def file_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.file_name for f in self.files))

    @property
    def known_sha256(self) -> frozenset[str]:
        return frozenset(f.sha256 for f in self.files if f.sha256)


_HALF = (0.5, 0.5, 0.5)
_ZERO = (0.0, 0.0, 0.0)
_ONE = (1.0, 1.0, 1.0)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _hyperswap(variant: str, sha256: str) -> ModelSpec:
    return ModelSpec(
        name=f"hyperswap_{variant}_256", kind="swapper",
        files=(KnownFile(f"hyperswap_{variant}_256.onnx", sha256, 402_742_682, f"{_FF} models-3.3.0"),),
        input_size=(256, 256), layout="NCHW", colour="RGB", mean=_HALF, std=_HALF,
        output="swapped face crop, RGB in [-1, 1] (a second output, a mask, is not used, as in FaceFusion)",
        template="arcface_128", swap_type="hyperswap", source_embedding="arcface_normed",
        embedder="arcface_w600k_r50", denormalize_output=True, license="ResearchRAIL-M (FaceFusion)")


_SPECS: tuple[ModelSpec, ...] = (
    # --- swappers ---------------------------------------------------------------------------------
    ModelSpec(
        name="inswapper_128", kind="swapper",
        files=(KnownFile("inswapper_128.onnx", "e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",
                         554_253_681, f"{_IF} / insightface's inswapper release"),
               KnownFile("inswapper_128.onnx", "a290273ed497312095dac48cdef20feec9d5208298223dd01288ab202b54bea7",
                         555_303_150, f"{_FF} models-3.0.0")),
        input_size=(128, 128), layout="NCHW", colour="RGB", mean=_ZERO, std=_ONE,
        output="swapped face crop, RGB in [0, 1]", template="arcface_128", swap_type="inswapper",
        source_embedding="emap", embedder="arcface_w600k_r50", license="insightface: non-commercial research"),
    ModelSpec(
        name="inswapper_128_fp16", kind="swapper",
        # A second value, 98fae144..., is pinned by one project for the same FaceFusion file and size;
        # it conflicts with the value below (pinned by several), so it is not accepted.
        files=(KnownFile("inswapper_128_fp16.onnx",
                         "c4eccca86ad177586c85c28bf1a64a9d9ed237e283a15818d831f7facfd3f420",
                         277_680_829, f"{_FF} models-3.0.0"),),
        input_size=(128, 128), layout="NCHW", colour="RGB", mean=_ZERO, std=_ONE,
        output="swapped face crop, RGB in [0, 1]", template="arcface_128", swap_type="inswapper",
        source_embedding="emap", embedder="arcface_w600k_r50", license="insightface: non-commercial research"),
    _hyperswap("1a", "c0e98a8a03a238f461ed3d2570e426b49f46745ee400854a60dceeb70c246add"),
    _hyperswap("1b", "5124031789c42f71b9558fb71954ef7aedb6da7ed9fac79293e23c61a792a73e"),
    _hyperswap("1c", "5528c2d76fe9986c99d829278987ef9f3a630cb606db7628d02b57b330f406a5"),
    ModelSpec(
        name="simswap_256", kind="swapper",
        # UNVERIFIED: no complete, agreed public sha256 found; pin it in models.hash_overrides.
        files=(KnownFile("simswap_256.onnx", None, None, f"{_FF} models-3.0.0"),),
        input_size=(256, 256), layout="NCHW", colour="RGB", mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
        output="swapped face crop, RGB in [0, 1] (not de-normalised)", template="arcface_112_v1",
        swap_type="simswap", source_embedding="converted_normed", embedder="arcface_w600k_r50",
        converter="crossface_simswap", license="SimSwap: non-commercial"),
    # --- embedding converter (simswap) ------------------------------------------------------------
    ModelSpec(
        name="crossface_simswap", kind="converter",
        files=(KnownFile("crossface_simswap.onnx", "6452a261ec30cc30afdbe4a426d82c3b10a476f2df794e3494071c02574e6829",
                         22_083_800, f"{_FF} models-3.4.0"),),
        input_size=(0, 0), layout="NCHW", colour="RGB", mean=_ZERO, std=_ONE,
        output="input 'input' [N, 512] raw ArcFace w600k_r50 embedding -> [N, 512] SimSwap identity (un-normalised)",
        license="SimSwap: non-commercial"),
    # --- ArcFace embedders (112x112 aligned with arcface_112_v2 -> 512) ----------------------------
    ModelSpec(
        name="arcface_w600k_r50", kind="embedder",
        files=(KnownFile("w600k_r50.onnx", "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
                         174_383_860, f"{_IF} buffalo_l.zip"),
               KnownFile("arcface_w600k_r50.onnx", "f1f79dc3b0b79a69f94799af1fffebff09fbd78fd96a275fd8f0cbbea23270d1",
                         174_388_474, f"{_FF} models-3.0.0 (same weights, FaceFusion's export)")),
        input_size=(112, 112), layout="NCHW", colour="RGB", mean=_HALF, std=_HALF,
        output="512-d identity embedding (L2-normalise before cosine similarity)", template="arcface_112_v2",
        license="insightface: non-commercial research"),
    ModelSpec(
        name="arcface_glintr100", kind="embedder",
        # Not to be confused with fal's AuraFace-v1, also shipped as glintr100.onnx (sha256 a7933ea5...).
        files=(KnownFile("glintr100.onnx", "4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf",
                         None, f"{_IF} antelopev2.zip"),),
        input_size=(112, 112), layout="NCHW", colour="RGB", mean=_HALF, std=_HALF,
        output="512-d identity embedding (L2-normalise before cosine similarity)", template="arcface_112_v2",
        license="insightface: non-commercial research"),
    # --- detector ---------------------------------------------------------------------------------
    ModelSpec(
        name="scrfd_10g", kind="detector",
        files=(KnownFile("det_10g.onnx", "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
                         16_923_827, f"{_IF} buffalo_l.zip"),
               KnownFile("scrfd_10g_bnkps.onnx", "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
                         16_923_827, f"{_IF} antelopev2.zip (same bytes as det_10g.onnx)")),
        input_size=(640, 640), layout="NCHW", colour="RGB", mean=(127.5 / 255,) * 3, std=(128.0 / 255,) * 3,
        output="9 outputs: scores, box distances, 5-keypoint distances for strides 8/16/32, 2 anchors each",
        license="insightface: non-commercial research"),
    # --- optional masks for the FaceFusion-style paste-back ---------------------------------------
    ModelSpec(
        name="xseg_2", kind="occluder",
        files=(KnownFile("xseg_2.onnx", "cd9a0879eaf43841d765472cf1f8c330dbf9dcb03da0eace93e95f3bcc399042",
                         70_324_286, f"{_FF} models-3.1.0"),),
        input_size=(256, 256), layout="NHWC", colour="BGR", mean=_ZERO, std=_ONE,
        output="[N, 256, 256, 1] face (not occluded) probability", license="GPL-3.0 (DeepFaceLab XSeg)"),
    ModelSpec(
        name="xseg_3", kind="occluder",
        files=(KnownFile("xseg_3.onnx", "48ccd7e8541e159a5a754ec9e62df2f12065f7df8f9af842c1750342c6533559",
                         70_327_709, f"{_FF} models-3.2.0"),),
        input_size=(256, 256), layout="NHWC", colour="BGR", mean=_ZERO, std=_ONE,
        output="[N, 256, 256, 1] face (not occluded) probability", license="GPL-3.0 (DeepFaceLab XSeg)"),
    ModelSpec(
        name="bisenet_resnet_34", kind="parser",
        files=(KnownFile("bisenet_resnet_34.onnx", "4a0b8c958a3c938913bd06a8365dbb3c8761afba6ecbf0d14b3b1f77eb230c96",
                         93_632_546, f"{_FF} models-3.0.0"),),
        input_size=(512, 512), layout="NCHW", colour="RGB", mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
        output="[N, 19, 512, 512] CelebAMask-HQ class logits", license="MIT (face-parsing.PyTorch)"),
)

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _SPECS}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; the error lists the names that exist."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registry names: {', '.join(sorted(REGISTRY))}") from None


def template_points(template: str, size: tuple[int, int]) -> np.ndarray:
    """The 5 template points in pixels of a crop of `size` (width, height)."""
    return (TEMPLATES[template] * np.asarray(size, dtype=np.float64)).astype(np.float32)
