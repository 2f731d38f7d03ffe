"""Locating model files, sha256 pinning, overrides (recorded), remote copies; nothing downloaded."""

from __future__ import annotations

import dataclasses
import shutil

import fsspec
import pytest

from core.hashing import sha256_file
from stages.config import ModelsConfig
from stages.onnx import model_files, registry
from stages.onnx.model_files import ModelFileNotFound, ModelHashMismatch, resolve_model


def test_missing_file_names_file_and_folder(tmp_path):
    with pytest.raises(ModelFileNotFound) as err:
        resolve_model(ModelsConfig(root=str(tmp_path)), "inswapper_128")
    msg = str(err.value)
    assert "inswapper_128.onnx" in msg and str(tmp_path) in msg and "models/README.md" in msg
    assert "Nothing is downloaded" in msg


def test_tampered_file_is_refused_and_override_is_recorded(tmp_path, stand_ins):
    _, paths = stand_ins
    shutil.copy(paths["crossface_simswap"], tmp_path / "crossface_simswap.onnx")
    good = sha256_file(tmp_path / "crossface_simswap.onnx")
    models = ModelsConfig(root=str(tmp_path), hash_overrides={"crossface_simswap": good})
    assert resolve_model(models, "crossface_simswap").hash_override

    data = bytearray((tmp_path / "crossface_simswap.onnx").read_bytes())
    data[-1] ^= 0xFF  # tamper
    (tmp_path / "crossface_simswap.onnx").write_bytes(bytes(data))
    bad = sha256_file(tmp_path / "crossface_simswap.onnx")
    with pytest.raises(ModelHashMismatch) as err:
        resolve_model(models, "crossface_simswap")
    assert bad in str(err.value) and registry.get_spec("crossface_simswap").files[0].sha256 in str(err.value)
    with pytest.raises(ModelHashMismatch):  # no override at all
        resolve_model(ModelsConfig(root=str(tmp_path)), "crossface_simswap")

    accepted = resolve_model(ModelsConfig(root=str(tmp_path), hash_overrides={"crossface_simswap": bad.upper()}),
                             "crossface_simswap")
    assert accepted.hash_override and accepted.sha256 == bad
    assert model_files.overrides_used()["crossface_simswap"] == bad


def test_registry_hash_needs_no_override(tmp_path, stand_ins, monkeypatch):
    _, paths = stand_ins
    shutil.copy(paths["crossface_simswap"], tmp_path / "crossface_simswap.onnx")
    digest = sha256_file(tmp_path / "crossface_simswap.onnx")
    spec = registry.get_spec("crossface_simswap")
    pinned = dataclasses.replace(spec, files=(dataclasses.replace(spec.files[0], sha256=digest),))
    monkeypatch.setitem(registry.REGISTRY, "crossface_simswap", pinned)
    resolved = resolve_model(ModelsConfig(root=str(tmp_path)), "crossface_simswap")
    assert not resolved.hash_override and resolved.sha256 == digest


def test_alternative_file_name(tmp_path, stand_ins):
    _, paths = stand_ins
    shutil.copy(paths["arcface_w600k_r50"], tmp_path / "arcface_w600k_r50.onnx")  # FaceFusion's name
    digest = sha256_file(tmp_path / "arcface_w600k_r50.onnx")
    resolved = resolve_model(ModelsConfig(root=str(tmp_path), hash_overrides={"arcface_w600k_r50": digest}),
                             "arcface_w600k_r50")
    assert resolved.file_name == "arcface_w600k_r50.onnx"


def test_remote_file_is_copied_to_the_cache_once(tmp_path, stand_ins, monkeypatch):
    _, paths = stand_ins
    mem = fsspec.filesystem("memory")
    mem.pipe("/ciep-test-models/crossface_simswap.onnx", paths["crossface_simswap"].read_bytes())
    digest = sha256_file(paths["crossface_simswap"])
    models = ModelsConfig(root="memory://ciep-test-models", cache_dir=str(tmp_path / "cache"),
                          hash_overrides={"crossface_simswap": digest})
    copies = []
    real_get = type(mem).get_file
    monkeypatch.setattr(type(mem), "get_file", lambda self, *a, **k: copies.append(a) or real_get(self, *a, **k))
    first = resolve_model(models, "crossface_simswap")
    second = resolve_model(models, "crossface_simswap")
    assert first.path == second.path and first.path.is_relative_to(tmp_path / "cache")
    assert first.origin.startswith("memory://") and first.sha256 == digest
    assert len(copies) == 1
    mem.rm("/ciep-test-models", recursive=True)
