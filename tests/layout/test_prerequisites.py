"""A fresh clone runs every test, and under CI=true nothing skips (tests/prerequisites.py):

- no test skips except through `tests.prerequisites.require` / `missing` (no `pytest.skip`, `skipif`,
  `importorskip` of its own), checked on the source with `ast`;
- no test or benchmark reads a folder beside the repository (`../shared`): what they need is inside it;
- `require` skips without CI=true and fails with it, run through pytest in a subprocess.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "tests" / "prerequisites.py"
SKIPS = {"skip", "skipif", "importorskip"}


def _sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _skip_calls(path: Path, root: Path = ROOT) -> list[str]:
    """`pytest.skip`, `pytest.importorskip`, `pytest.mark.skip(if)` and `unittest.skip*` used in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and (node.attr in SKIPS or node.attr.startswith("skipUnless")):
            owner = ast.unparse(node.value)
            if owner in ("pytest", "pytest.mark", "unittest", "mark"):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {owner}.{node.attr}")
    return found


def test_tests_skip_only_through_require():
    found = [hit for p in _sources("tests") if p != HELPER for hit in _skip_calls(p)]
    assert found == [], "skip through tests.prerequisites.require (fails under CI=true):\n" + "\n".join(found)


def test_the_skip_scan_sees_each_way_of_skipping(tmp_path: Path):
    probe = tmp_path / "probe.py"
    probe.write_text("import pytest\nimport unittest\n"
                     "a = pytest.importorskip('x')\n"
                     "@pytest.mark.skipif(True, reason='r')\ndef t(): pytest.skip('r')\n"
                     "@unittest.skip('r')\ndef u(): pass\n")
    assert len(_skip_calls(probe, tmp_path)) == 4


def test_nothing_reads_a_folder_beside_the_repository():
    found = []
    for path in (p for p in _sources("tests", "benchmarks") if p != Path(__file__).resolve()):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value == "shared" or "../shared" in node.value or node.value.startswith("shared/")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == [], "read data inside the repository (data/...), not beside it:\n" + "\n".join(found)


def _outcome(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    test = tmp_path / "test_probe.py"
    test.write_text("from tests.prerequisites import require\n\n"
                    "def test_needs_a_tool():\n"
                    "    require(False, 'the tool is not installed here')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(ROOT)}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", str(test)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_require_skips_here_and_fails_under_ci(tmp_path: Path):
    here = _outcome(tmp_path, None)
    assert here.returncode == 0 and "1 skipped" in here.stdout, here.stdout[-2000:]
    assert "the tool is not installed here" in here.stdout
    ci = _outcome(tmp_path, "true")
    assert ci.returncode == 1 and "1 failed" in ci.stdout, ci.stdout[-2000:]
    assert "prerequisite missing under CI=true" in ci.stdout and "the tool is not installed here" in ci.stdout
