"""The fault test of issue 20 on a real round (Ray, dlib, Parquet, DuckDB): a shard of every manifest table the
round commits, a commit marker and an image of every kind, corrupted one at a time by a bit flip and by
truncation, are each found and named by `ciep fsck`; with all of them corrupted at once, `ciep release create`
refuses the run, `ciep fsck --repair` takes them out, and a rerun gives the uninterrupted run's rows and image
bytes. (Every file kind against a synthetic run, releases and S3: tests/manifests/test_fsck.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from manifests.fsck import check_run
from manifests.store import ManifestStore
from pipeline.cli import main as ciep
from pipeline.run_idi import run_idi
from tests.hardening.conftest import round_config, rows_that_matter, uncommitted_files
from tests.manifests.test_fsck import flip, truncate

pytestmark = pytest.mark.slow

TABLES = ("sources", "candidates", "qc", "triples")


def _targets(run: Path) -> list[Path]:
    m = run / "manifests"
    shards = [sorted((m / t.name).glob("*.parquet"))[0] for t in sorted(m.iterdir()) if t.name != "_commits"]
    images = [sorted(k.glob("*.png"))[0] for k in sorted((run / "images").iterdir())]
    marker = sorted((m / "_commits").glob("ingest-*.json"))[0]
    return [*shards, marker, *images]


def test_corruption_found_named_refused_repaired_and_redone(baseline_run, tmp_path: Path, capsys):
    out = tmp_path / "runs"
    cfg = round_config(baseline_run.corpus, out)
    run = Path(run_idi(cfg)["timing"]["run_url"])
    targets = _targets(run)
    assert {p.parent.name for p in targets if p.suffix == ".parquet"} >= {*TABLES, "lineage"}
    assert {p.parent.name for p in targets if p.suffix == ".png"} == {"aligned", "transfer", "reference"}
    args = ["--output-root", str(out)]
    # one at a time, both ways: found and named, nothing else blamed
    backup = tmp_path / "backup"
    for target in targets:
        for corrupt in (flip, truncate):
            shutil.copyfile(target, backup)
            corrupt(target)
            assert ciep(["fsck", *args]) == 6, (target, corrupt)
            bad = [line for line in capsys.readouterr().out.splitlines() if line.startswith("BAD ")]
            assert bad and all(str(target) in line for line in bad), (target, bad)
            shutil.copyfile(backup, target)
    assert ciep(["fsck", *args]) == 0
    # all at once: the release is refused before repair, the repair takes them out, the rerun redoes them
    for k, target in enumerate(targets):
        (flip if k % 2 else truncate)(target)
    assert ciep(["release", "create", "--name", "broken", *args]) == 6
    assert "ciep fsck --repair" in capsys.readouterr().err and not (out / "releases" / "broken").exists()
    assert ciep(["fsck", "--repair", *args]) == 0
    assert check_run(run).ok
    run_idi(cfg)
    store = ManifestStore.open(str(run))
    for table in TABLES:
        assert rows_that_matter(store, table).equals(rows_that_matter(baseline_run.store, table)), table
    assert uncommitted_files(store) == []
    clean = Path(baseline_run.store.root)
    for image in sorted((clean / "images").rglob("*.png")):
        assert (run / image.relative_to(clean)).read_bytes() == image.read_bytes(), image
    assert ciep(["fsck", *args]) == 0
    assert ciep(["release", "create", "--name", "mended", *args]) == 0
