"""Find a registry model's file under `models.root` and check its sha256. Nothing is ever downloaded.

`models.root` is a local folder or an fsspec URL; a remote file is copied once into
`models.cache_dir` and the local copy is what gets hashed and loaded. A file whose sha256 is not one
the registry knows is refused, unless `models.hash_overrides[<name>]` equals it: then it is accepted
and the override is recorded (`ResolvedModel.hash_override`, `overrides_used()`) for the manifest.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import fsspec

from core.cache import cache_file
from core.config import ConfigError
from core.hashing import sha256_file
from stages.config import ModelsConfig
from stages.onnx.registry import get_spec

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_lock = threading.Lock()
_overrides_used: dict[str, str] = {}


class ModelFileNotFound(FileNotFoundError):
    """No file for a registry model under models.root."""


class ModelHashMismatch(ConfigError):
    """A model file's sha256 is neither a registry hash nor the configured override (fix: the file or
    models.hash_overrides)."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # registry name
    path: Path  # local file that is loaded
    file_name: str
    origin: str  # where it was found (path or URL under models.root)
    sha256: str
    hash_override: bool  # accepted through models.hash_overrides, not a registry hash


def overrides_used() -> dict[str, str]:
    """Registry name -> sha256 of every model accepted through models.hash_overrides in this process."""
    with _lock:
        return dict(_overrides_used)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool({"file", "local"} & set(protocols))


def resolve_model(models: ModelsConfig, name: str) -> ResolvedModel:
    """Locate `name`'s file under models.root, copy it locally if remote, and verify its sha256."""
    spec = get_spec(name)
    root = models.root
    where = models.location
    fs, root_path = where.fs, where.path
    local = _is_local(fs)
    if local:
        root_path = str(Path(root_path).expanduser())
    looked: list[str] = []
    for file_name in spec.file_names:
        candidate = f"{root_path.rstrip('/')}/{file_name}"
        origin = candidate if local else fs.unstrip_protocol(candidate)
        looked.append(origin)
        if not fs.isfile(candidate):
            continue
        path = Path(candidate) if local else cache_file(fs, candidate, origin, models.cache_dir)
        return _verify(name, path, file_name, origin, models.hash_overrides.get(name))
    first = spec.files[0]
    raise ModelFileNotFound(
        f"model {name!r}: no {' or '.join(spec.file_names)} in {root!r} (looked for {', '.join(looked)}). "
        f"Put {first.file_name} ({first.source}) in that folder, or point models.root at the folder that "
        f"holds it; see models/README.md. Nothing is downloaded.")


def _verify(name: str, path: Path, file_name: str, origin: str, override: str | None) -> ResolvedModel:
    spec = get_spec(name)
    digest = sha256_file(path)
    if digest in spec.known_sha256:
        return ResolvedModel(name, path, file_name, origin, digest, hash_override=False)
    if override and override.strip().lower() == digest:
        with _lock:
            first = _overrides_used.get(name) != digest
            _overrides_used[name] = digest
        if first:
            log.warning("model %s: %s has sha256 %s, not a registry hash; accepted by models.hash_overrides",
                        name, origin, digest)
        return ResolvedModel(name, path, file_name, origin, digest, hash_override=True)
    expected = ", ".join(sorted(spec.known_sha256)) or "none published (unverified model)"
    got_override = f"; models.hash_overrides[{name!r}] is {override!r}" if override else ""
    raise ModelHashMismatch(
        f"model {name!r}: {origin} has sha256 {digest}, expected {expected}{got_override}. "
        f"Refusing to load it. If you trust this file, set models.hash_overrides.{name}: {digest}")
