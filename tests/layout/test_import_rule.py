"""The import rule (ARCHITECTURE.md): each package imports only packages below it.

    core  <-  manifests  <-  stages  <-  qc  <-  publish  <-  pipeline

Checked on the source with `ast`, over every import statement anywhere in a module (top level, inside functions,
under `if TYPE_CHECKING:`), so a lazy import cannot hide an upward dependency.

Inside `stages/` (its rooms):
- the backend packages `stages/face/`, `stages/onnx/`, `stages/eadapter/` import from `stages/` only each other and
  the bottom modules `stages/config.py` (the config sections) and `stages/errors.py`, never a stage module;
- nothing below `pipeline/` imports the planner (`pipeline/planning/`): a helper it holds belongs in a module below it;
- `stages/config.py` imports only `core`, pydantic and the standard library;
- the modules of `stages/` import each other without a cycle.
"""

from __future__ import annotations

import ast
import sys
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


# --- rules inside stages/ ------------------------------------------------------------------------------------------

BACKEND_PACKAGES = ("stages/face", "stages/onnx", "stages/eadapter")
BACKENDS_MAY_IMPORT = ("stages.face", "stages.onnx", "stages.eadapter", "stages.config", "stages.errors")
PLANNER = ("pipeline.planning",)
STAGE_CONFIG = ("stages/config.py", "stages/config")  # one module, or one package of per-family modules
STAGE_CONFIG_MAY_IMPORT = {"core", "pydantic", "__future__", *sys.stdlib_module_names}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, dotted name) of everything each import reaches: `import a.b` gives a.b, `from a import b` gives a.b
    (the submodule b, or the name b in module a), so `from stages import ingest` is seen as stages.ingest."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _files(root: Path, *places: str) -> list[Path]:
    found: list[Path] = []
    for place in places:
        where = root / place
        found += sorted(where.rglob("*.py")) if where.is_dir() else [where] if where.is_file() else []
    return found


def backend_violations(root: Path = ROOT) -> list[str]:
    """Imports of stage modules (or anything in stages/ but the backends and the bottom modules) by a backend."""
    return [f"{path.relative_to(root)}:{line} imports {name}"
            for path in _files(root, *BACKEND_PACKAGES) for line, name in imported_names(path, root)
            if _within(name, ("stages",)) and not _within(name, BACKENDS_MAY_IMPORT)]


def planner_violations(root: Path = ROOT) -> list[str]:
    """Imports of the planner from below pipeline/."""
    below = [path for pkg in LAYERS[:-1] for path in _files(root, pkg)]
    return [f"{path.relative_to(root)}:{line} imports {name}"
            for path in below for line, name in imported_names(path, root) if _within(name, PLANNER)]


def stage_config_violations(root: Path = ROOT) -> list[str]:
    """Imports of stages/config(.py | /) that are not core, pydantic, the standard library or itself."""
    return [f"{path.relative_to(root)}:{line} imports {name}"
            for path in _files(root, *STAGE_CONFIG) for line, name in imported_names(path, root)
            if name.split(".")[0] not in STAGE_CONFIG_MAY_IMPORT and not _within(name, ("stages.config",))]


def import_cycles(package: str, root: Path = ROOT) -> list[list[str]]:
    """The import cycles among a package's modules (strongly connected components of its import graph)."""
    paths = {module_name(path, root): path for path in _files(root, package)}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        graph[name] = set()
        for _, target in imported_names(path, root):
            while target and target not in paths:  # the name in a module -> the module; a module -> its package
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_backends_never_import_a_stage_module() -> None:
    assert all((ROOT / pkg / "__init__.py").exists() for pkg in BACKEND_PACKAGES)
    assert backend_violations() == []


def test_nothing_imports_the_planner_for_a_helper() -> None:
    assert planner_violations() == []


def test_stage_config_imports_only_core() -> None:
    assert _files(ROOT, *STAGE_CONFIG)
    assert stage_config_violations() == []


def test_stages_has_no_import_cycle() -> None:
    assert import_cycles("stages") == []


def test_the_stages_rules_see_violations(tmp_path: Path) -> None:
    def write(rel: str, text: str) -> None:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)

    write("stages/face/m.py",
          "from typing import TYPE_CHECKING\n"
          "from stages.config import IngestConfig\n"      # allowed: the config sections
          "from stages.errors import is_transient\n"      # allowed: bottom module
          "from stages.onnx.scrfd import ScrfdDetector\n"  # allowed: another backend package
          "from . import types\n"                          # allowed: own package
          "if TYPE_CHECKING:\n    from stages.ingest import IngestStage\n"
          "def f():\n    from stages import base\n    from ..pairing import landmarks_array\n")  # old planner home
    write("stages/eadapter/n.py", "import stages.identity_swap\n")
    assert backend_violations(tmp_path) == ["stages/face/m.py:7 imports stages.ingest.IngestStage",
                                            "stages/face/m.py:9 imports stages.base",
                                            "stages/face/m.py:10 imports stages.pairing.landmarks_array",
                                            "stages/eadapter/n.py:1 imports stages.identity_swap"]
    write("pipeline/planning/stream.py", "from pipeline.planning.clusters import IdentityClusters\n")  # itself
    write("stages/identity_swap.py", "from pipeline.planning.rules import stable_hash\n")
    write("qc/stage.py", "def f():\n    from pipeline import planning\n")
    write("pipeline/generation_phase.py", "from pipeline.planning.stream import planned_size_bound\n")  # the driver
    assert planner_violations(tmp_path) == ["stages/identity_swap.py:1 imports pipeline.planning.rules.stable_hash",
                                            "qc/stage.py:2 imports pipeline.planning"]
    write("stages/config.py",
          "from __future__ import annotations\nfrom typing import Literal\nfrom pydantic import Field\n"
          "from core.config import Strict\nimport numpy\n"
          "def f():\n    from stages.face.types import DetectedFace\n")
    assert stage_config_violations(tmp_path) == ["stages/config.py:5 imports numpy",
                                                 "stages/config.py:7 imports stages.face.types.DetectedFace"]
    assert import_cycles("stages", tmp_path) == []
    write("stages/a.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stages.b import B\n")
    write("stages/b.py", "def f():\n    from stages import a\n")  # lazy and TYPE_CHECKING arrows count
    assert import_cycles("stages", tmp_path) == [["stages.a", "stages.b"]]


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
