"""Checksums, `ciep fsck` and `--repair` on a synthetic run (real Parquet shards, real PNG files, real DuckDB, a
real moto S3 server): every committed file, marker and image corrupted one at a time, by a bit flip and by
truncation, is found and named; reads of a damaged shard name it; repair withdraws exactly what is bad. The real
round rerun after a repair is tests/hardening/test_fsck_round.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from manifests.fsck import check_run, image_rel
from manifests.integrity import DIGESTS, MARKER_CHECKSUM, DamagedManifestError
from manifests.repair import repair_run
from manifests.store import ManifestStore
from manifests.synthetic import write_synthetic_run
from pipeline.cli import main as ciep
from publish.release.create import create_release
from publish.release.read import open_release


def flip(path: Path) -> None:
    """One bit flipped in the middle of the file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])


CORRUPTIONS: dict[str, Callable[[Path], None]] = {"flip": flip, "truncate": truncate}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fsck") / "runs"
    write_synthetic_run(str(root / "synthetic-0"), commit_rows=10)
    return root


@pytest.fixture
def runs(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(pristine, root)
    return root


def _targets(run: Path) -> list[Path]:
    """One shard of every table, one commit marker, one image of every kind."""
    m = run / "manifests"
    shards = [sorted((m / t).glob("*.parquet"))[0] for t in sorted(p.name for p in m.iterdir() if p.name != "_commits")]
    images = [sorted((run / "images" / kind).glob("*.png"))[0] for kind in sorted(p.name for p in (run / "images")
                                                                                  .iterdir())]
    return [*shards, sorted((m / "_commits").glob("*.json"))[0], *images]


def test_a_clean_run_passes_and_markers_carry_checksums(runs: Path, capsys):
    run = runs / "synthetic-0"
    markers = [json.loads(p.read_bytes()) for p in (run / "manifests" / "_commits").glob("*.json")]
    assert markers and all(MARKER_CHECKSUM in m and set(m[DIGESTS]) == set(m["files"]) for m in markers)
    assert ciep(["fsck", "--output-root", str(runs)]) == 0
    out = capsys.readouterr().out
    assert ": OK" in out and "BAD" not in out
    assert ciep(["fsck", str(run)]) == 0  # a run folder instead of a run id
    assert ciep(["fsck", "nosuchrun", "--output-root", str(runs)]) == 5


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_fsck_finds_and_names_every_corrupted_file(runs: Path, tmp_path: Path, how: str, capsys):
    run = runs / "synthetic-0"
    targets = _targets(run)
    tables = {p.parent.name for p in targets if p.suffix == ".parquet"}
    assert {"sources", "candidates", "qc", "triples", "rejects"} <= tables
    # transfer images: the real round (tests/hardening/test_fsck_round.py)
    assert {p.parent.name for p in targets if p.suffix == ".png"} >= {"aligned", "reference"}
    backup = tmp_path / "backup"
    for target in targets:
        shutil.copyfile(target, backup)
        CORRUPTIONS[how](target)
        assert ciep(["fsck", "synthetic-0", "--output-root", str(runs)]) == 6, target
        bad = [line for line in capsys.readouterr().out.splitlines() if line.startswith("BAD ")]
        assert len(bad) >= 1 and all(str(target) in line for line in bad), (target, bad)
        shutil.copyfile(backup, target)
    assert check_run(run).ok


def test_a_damaged_shard_read_names_the_file_and_fsck(runs: Path, capsys):
    run = runs / "synthetic-0"
    shard = sorted((run / "manifests" / "qc").glob("*.parquet"))[0]
    flip(shard)
    with pytest.raises(DamagedManifestError, match=f"{shard}.*ciep fsck --repair"):
        ManifestStore.open(str(run)).read_table("qc")
    code = ciep(["query", "select avg(id_sim_rt), count(reason) from qc", "--output-root", str(runs)])
    err = capsys.readouterr().err
    if code != 0:  # DuckDB did not verify the page checksum; when it fails, the file is named
        assert code == 6 and str(shard) in err and "ciep fsck --repair" in err, err
    assert ciep(["release", "create", "--name", "r1", "--output-root", str(runs)]) == 6
    assert str(shard) in capsys.readouterr().err
    assert not (runs / "releases" / "r1").exists()


def test_a_damaged_marker_is_named_wherever_the_run_is_read(runs: Path, capsys):
    run = runs / "synthetic-0"
    marker = sorted((run / "manifests" / "_commits").glob("*.json"))[0]
    data = json.loads(marker.read_bytes())
    data["rows"]["qc"] += 1  # valid JSON, wrong content
    marker.write_text(json.dumps(data, sort_keys=True))
    with pytest.raises(DamagedManifestError, match="does not match its own sha256"):
        ManifestStore.open(str(run)).read_table("qc")
    assert ciep(["query", "reasons", "--output-root", str(runs)]) == 6
    assert str(marker) in capsys.readouterr().err


def test_repair_withdraws_a_bad_commit_whole(runs: Path, capsys):
    run = runs / "synthetic-0"
    store = ManifestStore.open(str(run))
    before = {t: store.read_table(t).num_rows for t in ("sources", "qc", "triples")}
    bad = sorted((run / "manifests" / "qc").glob("*.parquet"))[0]
    truncate(bad)
    shard = bad.stem[len("part-"):]
    marker = json.loads((run / "manifests" / "_commits" / f"{shard}.json").read_bytes())
    assert ciep(["fsck", "--repair", "--output-root", str(runs)]) == 0
    out = capsys.readouterr().out
    assert f"BAD {bad}" in out and "1 commit(s) withdrawn" in out
    assert not bad.exists() and not (run / "manifests" / "_commits" / f"{shard}.json").exists()
    quarantined = {p.name for p in (run / "quarantine").rglob("*") if p.is_file()}
    assert {f"{shard}.json", bad.name} <= quarantined
    assert check_run(run).ok
    after = {t: store.read_table(t).num_rows for t in before}
    assert after["qc"] == before["qc"] - marker["rows"]["qc"]  # exactly that commit's items are undone
    assert after["sources"] == before["sources"] - marker["rows"].get("sources", 0)


def test_a_bad_image_undoes_the_candidates_that_use_it_only(runs: Path):
    run = runs / "synthetic-0"
    store = ManifestStore.open(str(run))
    cands = store.read_table("candidates").to_pylist()
    victim = next(c for c in cands if c["reference_path"])
    image = run / image_rel(victim["reference_path"])  # rows name the images where the run was written
    users = sorted(c["candidate_id"] for c in cands if c["reference_path"] == victim["reference_path"])
    others = {c["candidate_id"] for c in cands} - set(users)
    flip(image)
    report = check_run(run)
    assert [p.path for p in report.problems] == [str(image)]
    assert {i for _, i in report.problems[0].items} == set(users)
    result = repair_run(store, report)
    assert result.undone_candidates == users and result.rewritten and not result.withdrawn
    assert check_run(run).ok and not image.exists()
    for table, col in (("candidates", "candidate_id"), ("qc", "candidate_id"), ("triples", "triple_id")):
        ids = set(store.read_table(table, [col]).column(col).to_pylist())
        assert not ids & set(users)
        if table != "triples":
            assert ids == others, table
    assert store.read_table("sources").num_rows == 12  # sources untouched


def test_markers_written_before_checksums_are_checked_by_row_count(runs: Path, capsys):
    run = runs / "synthetic-0"
    for path in (run / "manifests" / "_commits").glob("*.json"):
        m = json.loads(path.read_bytes())
        path.write_text(json.dumps({k: v for k, v in m.items() if k not in (DIGESTS, MARKER_CHECKSUM)}))
    assert ciep(["fsck", "--output-root", str(runs)]) == 0
    assert "written before checksums" in capsys.readouterr().out
    truncate(sorted((run / "manifests" / "triples").glob("*.parquet"))[0])
    assert ciep(["fsck", "--output-root", str(runs)]) == 6


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_release_fsck_names_a_corrupted_release_file(runs: Path, tmp_path: Path, how: str, capsys):
    rel = create_release(str(runs / "synthetic-0"), "r1", str(runs / "releases"), splits={"train": 1.0})
    root = Path(rel.root)
    assert ciep(["fsck", "--release", "r1", "--output-root", str(runs)]) == 0
    shard = sorted((root / "manifests" / "triples").glob("*.parquet"))[0]
    image = root / sorted(open_release(str(runs / "releases"), "r1").store.read_table("triples", ["r_file"])
                          .column("r_file").to_pylist())[0]
    backup = tmp_path / "backup"
    for target in (shard, root / "release.json", image.resolve()):
        shutil.copyfile(target, backup)
        CORRUPTIONS[how](target)
        assert ciep(["fsck", "--release", "r1", "--output-root", str(runs)]) == 6, target
        bad = [line for line in capsys.readouterr().out.splitlines() if line.startswith("BAD ")]
        assert bad and all(target.name in line for line in bad), (target, bad)
        shutil.copyfile(backup, target)


def test_fsck_on_s3_uses_the_store_checksums(pristine: Path):
    from core.location import Location
    from tests.s3_server import moto_s3

    with moto_s3("fsck") as server:
        for path in sorted(p for p in pristine.rglob("*") if p.is_file()):
            server.fs.pipe_file(f"fsck/runs/{path.relative_to(pristine)}", path.read_bytes())
        run = Location("s3://fsck/runs/synthetic-0", server.opts)
        report = check_run(run)
        assert report.ok and report.by_store_checksum == report.files > 0, report.summary()
        shard = sorted(server.fs.glob("fsck/runs/synthetic-0/manifests/qc/*.parquet"))[0]
        image = sorted(server.fs.glob("fsck/runs/synthetic-0/images/reference/*.png"))[0]
        for path in (shard, image):
            data = bytearray(server.fs.cat_file(path))
            data[len(data) // 2] ^= 1
            server.fs.pipe_file(path, bytes(data))
        report = check_run(run)
        assert sorted(p.path for p in report.problems) == sorted([image, shard])
        result = repair_run(ManifestStore.open(run), report)
        assert result.withdrawn and result.undone_candidates
        assert check_run(run).ok
