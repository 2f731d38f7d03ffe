"""Where runs live and what `run.json` records about each: config, timing, per-round summaries."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import fsspec

from manifests.store import atomic_write_bytes


def run_url(output_root: str, run_id: str) -> str:
    return f"{output_root.rstrip('/')}/{run_id}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_run_info(url: str, storage_options: dict | None = None) -> dict:
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    path = f"{root.rstrip('/')}/run.json"
    if not fs.exists(path):
        return {}
    return json.loads(fs.cat_file(path))


def write_run_info(url: str, info: dict, storage_options: dict | None = None) -> None:
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    atomic_write_bytes(fs, f"{root.rstrip('/')}/run.json", json.dumps(info, indent=2, sort_keys=True).encode())


def list_runs(output_root: str, storage_options: dict | None = None) -> list[dict]:
    """Every run under output_root with its run.json, least recently updated first."""
    fs, root = fsspec.core.url_to_fs(output_root, **(storage_options or {}))
    if not fs.exists(root):
        return []
    runs = []
    for path in fs.glob(f"{root.rstrip('/')}/*/run.json"):
        info = json.loads(fs.cat_file(path))
        info["_url"] = run_url(output_root, path.rstrip("/").split("/")[-2])
        runs.append(info)
    return sorted(runs, key=lambda r: (r.get("updated_at", ""), r.get("created_at", "")))


def resolve_run(output_root: str, run_id: str | None, storage_options: dict | None = None) -> str:
    """URL of the named run, or of the most recently updated one."""
    if run_id:
        url = run_url(output_root, run_id)
        if not read_run_info(url, storage_options):
            raise FileNotFoundError(f"no run {run_id!r} under {output_root!r}")
        return url
    runs = list_runs(output_root, storage_options)
    if not runs:
        raise FileNotFoundError(f"no runs under {output_root!r}; run `python pipeline/run_idi.py` first")
    return runs[-1]["_url"]
