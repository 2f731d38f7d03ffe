"""The import rule (ARCHITECTURE.md): each package imports only packages below it.

    core  <-  manifests  <-  stages  <-  qc  <-  publish  <-  pipeline

Checked on the source with `ast`, over every import statement anywhere in a module (top level, inside functions,
under `if TYPE_CHECKING:`), so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["core", "manifests", "stages", "qc", "publish", "pipeline"]
ALLOWED = {pkg: set(LAYERS[: i + 1]) for i, pkg in enumerate(LAYERS)}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel_parts = path.relative_to(root).with_suffix("").parts
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel_parts[: len(rel_parts) - node.level])
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def violations(package: str, root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for line, module in imported_modules(path, root):
            top = module.split(".")[0]
            if top in LAYERS and top not in ALLOWED[package]:
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_package_imports_only_lower_layers(package: str) -> None:
    assert (ROOT / package / "__init__.py").exists()
    assert violations(package) == []


def test_the_check_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    (tmp_path / "stages" / "face").mkdir(parents=True)
    (tmp_path / "stages" / "face" / "m.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from core.config import Strict\n"          # allowed: lower layer
        "from . import other\n"                     # allowed: own package (stages.face)
        "if TYPE_CHECKING:\n    from pipeline.config import PipelineConfig\n"
        "def f():\n    import publish.release\n    from ...qc import decide\n")
    assert violations("stages", tmp_path) == ["stages/face/m.py:5 imports pipeline.config",
                                              "stages/face/m.py:7 imports publish.release",
                                              "stages/face/m.py:8 imports qc"]


TEST_ONLY = ("tests", "benchmarks")  # test-model builders and benchmark helpers: never part of production code


def imports_of_test_code(package: str, root: Path = ROOT) -> list[str]:
    """Imports of `tests` or `benchmarks` anywhere in the package."""
    return [f"{path.relative_to(root)}:{line} imports {module}"
            for path in sorted((root / package).rglob("*.py"))
            for line, module in imported_modules(path, root) if module.split(".")[0] in TEST_ONLY]


@pytest.mark.parametrize("package", LAYERS)
def test_production_code_never_imports_tests_or_benchmarks(package: str) -> None:
    assert imports_of_test_code(package) == []


def test_the_check_sees_an_import_of_tests(tmp_path: Path) -> None:
    (tmp_path / "stages" / "onnx").mkdir(parents=True)
    (tmp_path / "stages" / "onnx" / "m.py").write_text(
        "def f():\n    from tests.models.onnx_stand_ins import write_stand_ins\n    import benchmarks.common\n")
    assert imports_of_test_code("stages", tmp_path) == [
        "stages/onnx/m.py:2 imports tests.models.onnx_stand_ins", "stages/onnx/m.py:3 imports benchmarks.common"]
