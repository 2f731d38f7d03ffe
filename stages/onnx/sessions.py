"""onnxruntime sessions: providers from config filtered to what this machine has, one session per model file.

Sessions are cached per process, keyed by (real path, providers); insightface model objects built on a
file share that file's cache slot, so a model is never loaded twice in one process.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
T = TypeVar("T")

_lock = threading.Lock()
_sessions: dict[tuple[str, tuple[str, ...]], ort.InferenceSession] = {}
_insightface: dict[tuple[str, tuple[str, ...]], Any] = {}


def resolve_providers(requested: Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """The requested providers this onnxruntime build has, in order; CPU last when nothing else is left."""
    have = set(ort.get_available_providers() if available is None else available)
    chosen = [p for p in requested if p in have]
    missing = [p for p in requested if p not in have]
    if missing:
        log.info("onnxruntime providers not available here, skipped: %s", ", ".join(missing))
    if not chosen:
        log.warning("none of the requested providers %s is available; using %s", list(requested), CPU)
        chosen = [CPU]
    return chosen


def session_options() -> ort.SessionOptions:
    """Errors only in onnxruntime's log (it warns about e.g. inswapper's unused `emap` initializer)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return options


def _key(path: str | os.PathLike[str], providers: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    return os.path.realpath(path), tuple(providers)


def get_session(path: str | os.PathLike[str], providers: Sequence[str]) -> ort.InferenceSession:
    """The process's session for this file (created once)."""
    key = _key(path, providers)
    with _lock:
        model = _insightface.get(key)
        if model is not None:
            return model.session
        session = _sessions.get(key)
        if session is None:
            session = ort.InferenceSession(key[0], sess_options=session_options(), providers=list(providers))
            _sessions[key] = session
            log.info("loaded %s with %s", key[0], session.get_providers())
        return session


def get_insightface_model(path: str | os.PathLike[str], providers: Sequence[str], expected: type[T],
                          **kwargs: Any) -> T:
    """insightface's `model_zoo.get_model` on a local file (cached), checked to route to `expected`."""
    from insightface.model_zoo import get_model

    key = _key(path, providers)
    with _lock:
        model = _insightface.get(key)
        if model is None:
            if key in _sessions:
                raise RuntimeError(f"{key[0]} already has a plain session in this process")
            with contextlib.redirect_stdout(io.StringIO()):  # INSwapper prints its input shape
                model = get_model(key[0], providers=list(providers), sess_options=session_options(), **kwargs)
            if not isinstance(model, expected):
                raise TypeError(f"insightface routed {key[0]} to {type(model).__name__}, expected "
                                f"{expected.__name__}: the file does not have that model's inputs/outputs")
            _insightface[key] = model
            log.info("loaded %s as insightface %s with %s", key[0], type(model).__name__,
                     cast(Any, model).session.get_providers())  # every insightface model has .session
        elif not isinstance(model, expected):
            raise TypeError(f"{key[0]} is loaded as {type(model).__name__}, not {expected.__name__}")
        return model


def batch_dim_is_dynamic(session: ort.InferenceSession, input_index: int = 0) -> bool:
    """Whether the first axis of an input accepts any batch size (a symbolic or unknown dimension)."""
    dim = session.get_inputs()[input_index].shape[0]
    return not isinstance(dim, int) or dim <= 0


def clear_cache() -> None:
    """Forget every cached session (tests)."""
    with _lock:
        _sessions.clear()
        _insightface.clear()
