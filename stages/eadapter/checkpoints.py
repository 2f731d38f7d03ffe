"""Training checkpoints of an E-Adapter under an output folder.

    <output>/checkpoints/step-XXXXXXXX/{adapter/, optimizer.pt, state.json}
    <output>/checkpoints/latest.json     {"checkpoint": "step-XXXXXXXX"}, written last: a checkpoint is used only
                                         once all its files exist

The newest `keep` checkpoints are kept. Every file is written atomically through the output's `Location`.
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch

from core.location import Location
from stages.eadapter import storage
from stages.eadapter.model import EAdapter

LATEST = "latest.json"


def latest_checkpoint(output: Location | str) -> str | None:
    """URL of the newest complete checkpoint under the output folder, or None."""
    checkpoints = Location.of(output).join("checkpoints")
    if not checkpoints.exists(LATEST):
        return None
    name = json.loads(checkpoints.read_bytes(LATEST))["checkpoint"]
    return checkpoints.join(name).url


def save_checkpoint(output: Location, adapter: EAdapter, optimizer: torch.optim.Optimizer, state: dict,
                    keep: int) -> str:
    """Write a checkpoint named by state["step"], point latest.json at it, drop all but the newest `keep`."""
    name = f"step-{state['step']:08d}"
    checkpoints = output.join("checkpoints")
    folder = checkpoints.join(name)
    adapter.save_pretrained(folder.join("adapter"))
    buf = io.BytesIO()
    torch.save(optimizer.state_dict(), buf)
    storage.write_bytes(folder.join("optimizer.pt"), buf.getvalue())
    storage.write_bytes(folder.join("state.json"), json.dumps(state).encode())
    # the pointer is written last: a checkpoint is used only once all its files exist
    storage.write_bytes(checkpoints.join(LATEST), json.dumps({"checkpoint": name}).encode())
    fs = checkpoints.fs
    old = sorted(p for p in fs.ls(checkpoints.path, detail=False)
                 if p.rstrip("/").rsplit("/", 1)[-1].startswith("step-"))
    for path in old[:-keep]:
        fs.rm(path, recursive=True)
    return folder.url


def load_adapter(checkpoint: Location) -> EAdapter:
    return EAdapter.from_pretrained(checkpoint.join("adapter"))


def load_state(checkpoint: Location) -> dict[str, Any]:
    """The checkpoint's state.json: step, losses so far, mode."""
    return json.loads(checkpoint.read_bytes("state.json"))


def load_optimizer(checkpoint: Location, optimizer: torch.optim.Optimizer) -> None:
    optimizer.load_state_dict(torch.load(io.BytesIO(checkpoint.read_bytes("optimizer.pt")), weights_only=True))
