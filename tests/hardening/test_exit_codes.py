"""Issue 11 case 9: every user error is one line on stderr with the documented exit status (README "Exit
statuses"), run as a user would (subprocesses of `python pipeline/run_idi.py` and `python -m pipeline.cli`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manifests.synthetic import write_synthetic_run
from pipeline.exits import EXIT_LOCATION, EXIT_NOT_FOUND, EXIT_TRANSIENT, EXIT_USAGE
from tests.conftest import REPO, london_identities, make_corpus
from tests.hardening.mounts import in_private_tmpfs, private_tmpfs_works
from tests.prerequisites import become_a_user_who_cannot_read, require

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _call(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=ENV, timeout=timeout)


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return _call([sys.executable, *args], timeout)


def _idi_argv(corpus: Path | str, out: Path | str, *extra: str) -> list[str]:
    sets = [f"corpus.root={corpus}", f"run.output_root={out}", "run.name=codes", "qc.expression.calibrate=false",
            *extra]
    return [sys.executable, str(REPO / "pipeline" / "run_idi.py"), *[a for s in sets for a in ("--set", s)]]


def _idi(corpus: Path | str, out: Path | str, *extra: str) -> subprocess.CompletedProcess:
    return _call(_idi_argv(corpus, out, *extra))


def _one_line(proc: subprocess.CompletedProcess) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("codes") / "corpus", london_identities()[:2])


def test_missing_corpus_root_is_checked_before_ray_or_a_run_folder(tmp_path):
    started = time.monotonic()
    proc = _idi(tmp_path / "no-such-corpus", tmp_path / "runs")
    assert proc.returncode == EXIT_LOCATION
    assert "corpus root" in _one_line(proc) and "does not exist" in _one_line(proc)
    assert not (tmp_path / "runs").exists(), "no run folder for a run that cannot start"
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout
    assert time.monotonic() - started < 60


def test_output_root_that_is_a_file(corpus, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = _idi(corpus, tmp_path / "afile")
    assert proc.returncode == EXIT_LOCATION and "is a file" in _one_line(proc)


# The run's output root on a real tmpfs, mounted for the run's process alone (tests/hardening/mounts.py).
def _require_private_tmpfs() -> None:
    require(private_tmpfs_works(), "mounting a tmpfs needs root, or user namespaces for `unshare --map-root-user "
                                   "--mount`")


def test_read_only_output_root(corpus, tmp_path):
    _require_private_tmpfs()
    ro = tmp_path / "ro"
    proc = _call(in_private_tmpfs(ro, "size=1m,ro", _idi_argv(corpus, ro)))
    assert proc.returncode == EXIT_LOCATION and "not writable" in _one_line(proc), proc.stderr[-2000:]


def test_full_disk_under_the_output_root(corpus, tmp_path):
    _require_private_tmpfs()
    full = tmp_path / "full"
    # filled to the last block before the run starts: no room for the run's folder, lock and run.json
    proc = _call(in_private_tmpfs(full, "size=64k", _idi_argv(corpus, full), fill=True))
    line = _one_line(proc)
    assert proc.returncode in (EXIT_TRANSIENT, EXIT_LOCATION), proc.stderr[-2000:]
    assert "No space left on device" in line or "not writable" in line


def test_override_errors_are_reported_as_override_errors(corpus, tmp_path):
    proc = _idi(corpus, tmp_path, "run.seed=abc", "qc.no_such_key=1")
    assert proc.returncode == EXIT_USAGE
    assert "invalid --set override" in proc.stderr and "(from --set run.seed=abc)" in proc.stderr
    assert "(from --set qc.no_such_key=1)" in proc.stderr and "demo.yaml" not in proc.stderr


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_run(str(root / "synth-1"), identities=4)
    return root


def test_mistyped_named_query_and_bad_sql(synthetic_runs):
    proc = _run("-m", "pipeline.cli", "query", "--output-root", str(synthetic_runs), "pass-rat")
    assert proc.returncode == EXIT_USAGE
    assert "no named query 'pass-rat' (did you mean 'pass-rate'?)" in _one_line(proc)
    proc = _run("-m", "pipeline.cli", "query", "--output-root", str(synthetic_runs), "select nope from qc")
    assert proc.returncode == EXIT_USAGE and "SQL error" in _one_line(proc)
    proc = _run("-m", "pipeline.cli", "query", "--output-root", str(synthetic_runs), "pass-rate")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_not_found_is_the_same_status_for_runs_and_releases(synthetic_runs):
    run = _run("-m", "pipeline.cli", "query", "--output-root", str(synthetic_runs), "--run", "nope", "reasons")
    rel = _run("-m", "pipeline.cli", "release", "verify", "nope", "--output-root", str(synthetic_runs))
    assert run.returncode == rel.returncode == EXIT_NOT_FOUND, (run.stderr, rel.stderr)
    assert "no run 'nope'" in _one_line(run) and "no release 'nope'" in _one_line(rel)


def test_unreadable_corpus_folder_as_another_user(corpus, tmp_path):
    """A corpus root its user cannot read: as root (who reads everything) the run becomes `nobody`; as any other
    user it runs as that user, for whom the folder's mode 000 holds."""
    become = become_a_user_who_cannot_read()
    base = Path(f"/tmp/ciep-codes-{os.getpid()}")
    (base / "corpus").mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    os.chmod(base / "corpus", 0o000)
    try:
        code = (f"import os, sys; import pipeline.run_idi as m; {become}"
                f"sys.exit(m.main(['--set', 'corpus.root={base / 'corpus'}', '--set', 'run.output_root={base}/runs']))")
        proc = _run("-c", code)
        assert proc.returncode == EXIT_LOCATION, proc.stderr[-2000:]
        assert "not readable" in _one_line(proc) or "Permission denied" in _one_line(proc)
    finally:
        os.chmod(base / "corpus", 0o755)
        subprocess.run(["rm", "-rf", str(base)], check=False)
