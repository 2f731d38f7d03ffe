"""Small stand-in ONNX files with the real models' input/output names, shapes and initializer layout.

For tests and benchmarks only: tiny untrained nets exported with torch.onnx, written under the
registry's file names so the whole locate -> hash -> load -> run path is exercised. Their sha256 is
not the registry's, so a config using them needs `models.hash_overrides` (see `stand_in_config`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from core.hashing import sha256_file
from stages.onnx.registry import get_spec

# det_10g's real input and output names (outputs: scores 8/16/32, boxes 8/16/32, keypoints 8/16/32).
SCRFD_INPUT = "input.1"
SCRFD_OUTPUTS = ("448", "471", "494", "451", "474", "497", "454", "477", "500")


def _export(net: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> None:
    net.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          opset_version=17, dynamo=False)


def _rename(model: onnx.ModelProto, names: dict[str, str]) -> None:
    """Rename graph inputs/outputs (the TorchScript exporter refuses numeric names like '448')."""
    for value in list(model.graph.input) + list(model.graph.output):
        value.name = names.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]


class _InswapperNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(512, 8)
        self.dec = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.enc(target) + self.fc(source)[:, :, None, None])
        return torch.clamp(target + 0.25 * torch.tanh(self.dec(h)), 0, 1)


def build_inswapper(path: Path, seed: int = 0) -> Path:
    """inputs target [N,3,128,128] (RGB 0..1), source [N,512]; output [N,3,128,128]; `emap` 512x512 LAST
    initializer (insightface reads `graph.initializer[-1]`)."""
    torch.manual_seed(seed)
    _export(_InswapperNet(), (torch.rand(1, 3, 128, 128), torch.rand(1, 512)), path, ["target", "source"],
            ["output"], {"target": {0: "N"}, "source": {0: "N"}, "output": {0: "N"}})
    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    emap = (rng.standard_normal((512, 512)) / np.sqrt(512)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(emap, "emap"))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class _HyperswapNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(512, 8)
        self.dec = nn.Conv2d(8, 3, 3, padding=1)
        self.mask = nn.Conv2d(8, 1, 1)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.enc(target) + self.fc(source)[:, :, None, None])
        return torch.clamp(target + 0.5 * torch.tanh(self.dec(h)), -1, 1), torch.sigmoid(self.mask(h))


def build_hyperswap(path: Path, seed: int = 1) -> Path:
    """inputs source [N,512] (normed ArcFace), target [N,3,256,256] in [-1,1]; outputs image [N,3,256,256]
    in [-1,1] and mask [N,1,256,256]."""
    torch.manual_seed(seed)
    _export(_HyperswapNet(), (torch.rand(1, 512), torch.rand(1, 3, 256, 256) * 2 - 1), path, ["source", "target"],
            ["output", "mask"], {"source": {0: "N"}, "target": {0: "N"}, "output": {0: "N"}, "mask": {0: "N"}})
    return path


class _SimswapNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(512, 8)
        self.dec = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.enc(target) + self.fc(source)[:, :, None, None])
        return torch.sigmoid(self.dec(h))


def build_simswap(path: Path, seed: int = 2) -> Path:
    """inputs target [N,3,256,256] (ImageNet-normalised RGB), source [N,512]; output [N,3,256,256] in [0,1]."""
    torch.manual_seed(seed)
    _export(_SimswapNet(), (torch.rand(1, 3, 256, 256), torch.rand(1, 512)), path, ["target", "source"],
            ["output"], {"target": {0: "N"}, "source": {0: "N"}, "output": {0: "N"}})
    return path


def build_converter(path: Path, seed: int = 3) -> Path:
    """input 'input' [N,512] -> output [N,512] (a crossface_* embedding converter)."""
    torch.manual_seed(seed)
    _export(nn.Linear(512, 512), (torch.rand(1, 512),), path, ["input"], ["output"],
            {"input": {0: "N"}, "output": {0: "N"}})
    return path


class _ArcFaceNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(torch.relu(self.c2(torch.relu(self.c1(x)))), 7)
        return self.fc(h.flatten(1))


def build_arcface(path: Path, seed: int = 4) -> Path:
    """input 'input.1' [N,3,112,112] (RGB, (x-127.5)/127.5) -> output [N,512] (w600k_r50 / glintr100 layout)."""
    torch.manual_seed(seed)
    _export(_ArcFaceNet(), (torch.rand(1, 3, 112, 112),), path, ["input"], ["embedding"],
            {"input": {0: "None"}, "embedding": {0: "None"}})
    model = onnx.load(str(path))
    _rename(model, {"input": "input.1", "embedding": "683"})
    onnx.save(model, str(path))
    return path


class _ScrfdNet(nn.Module):
    """Fires only at stride 32, on 32x32 cells that are pure red in the RGB it is fed (so a BGR/RGB mix-up
    finds nothing); box = anchor -/+ `box_cells` strides (left, top, right, bottom); fixed 5 keypoints."""

    KPS = (-0.5, -0.5, 0.5, -0.5, 0.0, 0.0, -0.4, 0.5, 0.4, 0.5)  # x, y per point, in stride units

    def __init__(self, box_cells: tuple[float, float, float, float]) -> None:
        super().__init__()
        self.box_cells = box_cells

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        redness = x[:, 0:1] - x[:, 1:2] - x[:, 2:3]  # ~3 on red, ~1 on black, below 1.5 on faces
        scores, boxes, kpss = [], [], []
        for stride in (8, 16, 32):
            p = F.avg_pool2d(redness, stride, stride)
            logit = 4 * p - 7 if stride == 32 else p * 0 - 20
            s = torch.sigmoid(torch.cat([logit, logit], 1))  # 2 anchors per location
            scores.append(s.permute(0, 2, 3, 1).reshape(-1, 1))
            b = torch.cat([p * 0 + v for v in self.box_cells] * 2, 1)
            boxes.append(b.permute(0, 2, 3, 1).reshape(-1, 4))
            k = torch.cat([p * 0 + v for v in self.KPS] * 2, 1)
            kpss.append(k.permute(0, 2, 3, 1).reshape(-1, 10))
        return (*scores, *boxes, *kpss)


def build_scrfd(path: Path, box_cells: tuple[float, float, float, float] = (2, 2, 2, 2)) -> Path:
    """input 'input.1' [1,3,?,?] (BGR->RGB, (x-127.5)/128); 9 outputs like det_10g: [A,1] x3, [A,4] x3, [A,10] x3."""
    names = [f"o{i}" for i in range(9)]
    _export(_ScrfdNet(box_cells), (torch.zeros(1, 3, 640, 640),), path, ["input"], names,
            {"input": {2: "h", 3: "w"}, **{n: {0: f"a{i % 3}"} for i, n in enumerate(names)}})
    model = onnx.load(str(path))
    _rename(model, {"input": SCRFD_INPUT, **dict(zip(names, SCRFD_OUTPUTS, strict=False))})
    onnx.save(model, str(path))
    return path


def build_xseg(path: Path, seed: int = 5) -> Path:
    """input 'input' [N,256,256,3] (BGR 0..1, NHWC) -> output [N,256,256,1] in [0,1]."""
    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.c(x.permute(0, 3, 1, 2)) + 3).permute(0, 2, 3, 1)

    _export(Net(), (torch.rand(1, 256, 256, 3),), path, ["input"], ["output"],
            {"input": {0: "N"}, "output": {0: "N"}})
    return path


def build_bisenet(path: Path, seed: int = 6) -> Path:
    """input 'input' [N,3,512,512] (ImageNet-normalised RGB) -> output [N,19,512,512] logits."""
    torch.manual_seed(seed)
    _export(nn.Conv2d(3, 19, 1), (torch.rand(1, 3, 512, 512),), path, ["input"], ["output"],
            {"input": {0: "N"}, "output": {0: "N"}})
    return path


# registry name -> builder(path) (each takes further keyword arguments with defaults)
BUILDERS: dict[str, Callable[..., Path]] = {
    "inswapper_128": build_inswapper,
    "hyperswap_1a_256": build_hyperswap,
    "simswap_256": build_simswap,
    "crossface_simswap": build_converter,
    "arcface_w600k_r50": build_arcface,
    "scrfd_10g": build_scrfd,
    "xseg_3": build_xseg,
    "bisenet_resnet_34": build_bisenet,
}


def write_stand_ins(folder: str | Path, names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Write stand-ins under their registry file names; registry name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names or tuple(BUILDERS):
        out[name] = BUILDERS[name](folder / get_spec(name).files[0].file_name)
    return out


def stand_in_config(folder: str | Path, paths: dict[str, Path]) -> dict:
    """The `models` config section that admits the stand-ins (CPU, their hashes as overrides)."""
    return {"root": str(folder), "providers": ["CPUExecutionProvider"],
            "hash_overrides": {name: sha256_file(p) for name, p in paths.items()}}
