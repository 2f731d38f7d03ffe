"""Where runs live and what `run.json` records about each: config, timing, per-round summaries."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from core.location import Location
from manifests.store import atomic_write_bytes


def run_url(output_root: str, run_id: str) -> str:
    return f"{output_root.rstrip('/')}/{run_id}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_run_info(url: Location | str) -> dict:
    run = Location.of(url)
    if not run.exists("run.json"):
        return {}
    info: dict = json.loads(run.read_bytes("run.json"))
    return info


def write_run_info(url: Location | str, info: dict) -> None:
    run = Location.of(url)
    atomic_write_bytes(run.fs, run.sub_path("run.json"), json.dumps(info, indent=2, sort_keys=True).encode())


def list_runs(output_root: Location | str) -> list[dict]:
    """Every run under output_root with its run.json, least recently updated first."""
    out = Location.of(output_root)
    if not out.fs.exists(out.path):
        return []
    runs = []
    for path in out.fs.glob(f"{out.path}/*/run.json"):
        info = json.loads(out.fs.cat_file(path))
        info["_url"] = run_url(out.url, path.rstrip("/").split("/")[-2])
        runs.append(info)
    return sorted(runs, key=lambda r: (r.get("updated_at", ""), r.get("created_at", "")))


def find_run(output_root: Location, run_id: str | None) -> Location:
    """The named run under output_root, or the most recently updated one (with output_root's options)."""
    if run_id:
        run = output_root.join(run_id)
        if not read_run_info(run):
            raise FileNotFoundError(f"no run {run_id!r} under {output_root.url!r}")
        return run
    runs = list_runs(output_root)
    if not runs:
        raise FileNotFoundError(f"no runs under {output_root.url!r}; run `python pipeline/run_idi.py` first")
    return output_root.join(str(runs[-1]["_url"]).rsplit("/", 1)[-1])
