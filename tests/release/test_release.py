"""Releases of a real finished run: self-contained snapshot, identity splits, immutability, concurrent
creates, verify catching tampering, diff, list, the dataset card, and `ciep query --release`."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest

from core.splits import split_of
from manifests.integrity import DamagedManifestError
from manifests.schemas import TRIPLE_SCORES
from manifests.store import ManifestStore
from manifests.synthetic import write_synthetic_run
from pipeline.cli import main as ciep
from publish.dataset_card import parse_card_header
from publish.export import export_release
from publish.release.create import create_release
from publish.release.diff import diff_releases
from publish.release.read import ReleaseError, ReleaseExistsError, list_releases, open_release
from publish.release.verify import verify_release
from tests.finished_run import RELEASE, SPLITS, snapshot


def _triples(rel) -> list[dict]:
    return rel.store.read_table("triples").to_pylist()


def _change_image_everywhere(run: Path, role: str) -> None:
    """Append a byte to the first `role` image of the run and to every other file of the run with its content: the
    shared pool reuses an image it already holds by content (without reading the run's copy again), and the
    synthetic run reaches the same content through several paths, so changing one path would be caught or not
    depending on which parallel task puts that content first."""
    triples = ManifestStore.open(str(run)).read_table("triples")
    sha = triples.column(f"{role}_sha256")[0].as_py()
    paths = {p for k in ("s", "r", "t")
             for p, h in zip(triples.column(f"{k}_path").to_pylist(), triples.column(f"{k}_sha256").to_pylist(),
                             strict=True) if h == sha}
    for p in paths:
        Path(p).write_bytes(Path(p).read_bytes() + b"!")


def _staging_empty(root: Path) -> bool:
    return not (root / "_staging").exists() or not list((root / "_staging").iterdir())


def test_release_is_a_self_contained_snapshot_of_accepted_triples(finished_run, release):
    run_triples = ManifestStore.open(finished_run.run_url).read_table("triples").to_pylist()
    rows = _triples(release)
    info = release.info
    # the rounds that have triples inside one split (QC decides which candidates those are)
    in_split = sorted({t["round"] for t in run_triples
                       if split_of(t["identity_i"], SPLITS) == split_of(t["identity_j"], SPLITS)})
    assert info["source"]["run_id"] == finished_run.run_id and info["source"]["rounds"] == in_split != []
    assert len(rows) + info["stats"]["excluded_cross_split"] == len(run_triples)
    assert info["stats"]["triples"] == len(rows) > 0
    root = Path(release.root)
    for r in rows:
        for k in "srt":
            data = (root / r[f"{k}_file"]).read_bytes()
            assert len(data) == r[f"{k}_bytes"]
            assert hashlib.sha256(data).hexdigest() == r[f"{k}_sha256"] in r[f"{k}_file"]
            assert not r[f"{k}_file"].startswith("/")
    # Lineage, thresholds and summary stats are recorded.
    lineage = info["lineage"]
    assert {m["id"] for m in lineage["models"]["swap"]} == {r["swap_model"] for r in rows}
    assert all(m["sha256"] for role in lineage["models"].values() for m in role)
    run_info = json.loads((Path(finished_run.run_url) / "run.json").read_text())
    assert lineage["thresholds"][0]["max_leak_similarity"] == run_info["identity_calibration"]["max_leak_similarity"]
    assert lineage["config"]["corpus"]["root"] == finished_run.cfg.corpus.root
    assert info["qc"][0]["candidates"] >= info["qc"][0]["accepted"]
    assert set(info["stats"]["scores"]) == set(TRIPLE_SCORES)  # every QC score the triples carry
    assert info["stats"]["image_bytes"] == sum({r[f"{k}_file"]: r[f"{k}_bytes"] for r in rows for k in "srt"}.values())
    assert verify_release(release).ok


def test_splits_are_by_identity_with_no_identity_in_two_splits(release):
    rows = _triples(release)
    members: dict[str, set[str]] = {}
    for r in rows:
        assert split_of(r["identity_i"], SPLITS) == split_of(r["identity_j"], SPLITS) == r["split"]
        members.setdefault(r["split"], set()).update((r["identity_i"], r["identity_j"]))
    assert len(members) == 2, "the fixture's ratios should give both splits triples"
    seen = [i for ids in members.values() for i in ids]
    assert len(seen) == len(set(seen))
    per_split = {k: v["triples"] for k, v in release.info["stats"]["splits"].items()}
    assert per_split == dict(Counter(r["split"] for r in rows))


def test_split_rule_is_stable_and_follows_the_ratios():
    ratios = {"train": 0.8, "validation": 0.1, "test": 0.1}
    ids = [f"person-{k}" for k in range(4000)]
    got = Counter(split_of(i, ratios) for i in ids)
    # pinned values of the rule (core/splits.py, sha256 of the name): the same identity lands in the same split in
    # any process and any later version; a change would move identities between the splits of new releases
    not_train = {3: "test", 6: "validation", 12: "test", 14: "test", 16: "test", 19: "validation",
                 20: "validation", 21: "test", 25: "test", 37: "validation", 45: "validation", 49: "test"}
    assert [split_of(i, ratios) for i in ids[:50]] == [not_train.get(k, "train") for k in range(50)]
    assert {i: split_of(i, SPLITS) for i in ("002", "005", "006", "007")} == \
        {"002": "train", "005": "train", "006": "test", "007": "test"}  # tests/finished_run.py relies on it
    for name, ratio in ratios.items():
        assert abs(got[name] / len(ids) - ratio) < 0.02, got
    assert split_of("x", {"train": 1.0, "test": 0.0}) == "train"


def test_an_existing_name_is_an_error_and_the_release_does_not_change(finished_run, release):
    before = snapshot(Path(release.root))
    with pytest.raises(ReleaseExistsError, match="exists"):
        create_release(finished_run.run_url, RELEASE, finished_run.releases_root, splits=SPLITS)
    assert snapshot(Path(release.root)) == before
    assert ciep(["release", "create", "--output-root", finished_run.output_root, "--run", finished_run.run_id,
                 "--name", RELEASE]) == 1
    assert snapshot(Path(release.root)) == before


def test_concurrent_creates_of_one_name_one_wins(tmp_path: Path):
    run = tmp_path / "run"
    write_synthetic_run(str(run), identities=8, candidates_per_round=40)
    root = tmp_path / "releases"
    barrier, outcome = threading.Barrier(3), []

    def create() -> None:
        barrier.wait()
        try:
            create_release(str(run), "race", str(root), splits={"train": 1.0})
            outcome.append("ok")
        except ReleaseExistsError as err:
            outcome.append(str(err))
    threads = [threading.Thread(target=create) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcome.count("ok") == 1, outcome
    assert all("race" in o for o in outcome if o != "ok")
    assert verify_release(open_release(str(root), "race")).ok
    assert _staging_empty(root)


def test_a_failed_create_leaves_nothing_and_frees_the_name(tmp_path: Path):
    run = tmp_path / "run"
    write_synthetic_run(str(run), identities=8, candidates_per_round=40)
    victim = Path(ManifestStore.open(str(run)).read_table("triples").column("r_path")[0].as_py())
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    root = tmp_path / "releases"
    with pytest.raises(DamagedManifestError, match=f"{victim}.*content differs"):  # fsck first: nothing claimed
        create_release(str(run), "v1", str(root), splits={"train": 1.0})
    assert not root.exists()
    # without the fsck, the task that meets the image fails and leaves nothing
    with pytest.raises(ReleaseError, match="changed since the run wrote it"):
        create_release(str(run), "v1", str(root), splits={"train": 1.0}, fsck=False)
    assert not (root / "v1").exists() and _staging_empty(root)
    # the images the task had written before it failed were never committed: not named, no temporary file left
    assert not [p for p in (root / "_pool").rglob("*") if p.is_file()]
    victim.write_bytes(original)
    assert create_release(str(run), "v1", str(root), splits={"train": 1.0}).info["stats"]["triples"] > 0


def test_a_run_without_accepted_triples_is_a_plain_error_and_claims_nothing(tmp_path: Path):
    run = tmp_path / "run"
    write_synthetic_run(str(run), identities=8, candidates_per_round=40)
    root = tmp_path / "releases"
    with pytest.raises(ReleaseError, match=r"has no accepted triples in rounds \[7\]"):
        create_release(str(run), "v1", str(root), splits={"train": 1.0}, rounds=[7])
    assert not (root / "v1").exists() and _staging_empty(root)
    assert create_release(str(run), "v1", str(root), splits={"train": 1.0}).info["stats"]["triples"] > 0


def test_a_run_written_before_a_later_qc_score_is_released_with_it_null(tmp_path: Path, monkeypatch):
    """A run committed by an older writer (here: before schema 6's mouth_tint, written through the store's schema
    without it) releases, its triples carrying the later score as null, and exports."""
    import manifests.schemas as schemas

    old = {t: schemas.TABLES[t].remove(schemas.TABLES[t].get_field_index("mouth_tint")) for t in ("qc", "triples")}
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        for t, schema in old.items():
            m.setitem(schemas.TABLES, t, schema)
        write_synthetic_run(str(run), identities=8, candidates_per_round=40)
    assert "mouth_tint" not in ManifestStore.open(str(run), schemas=old).read_table("triples").column_names
    rel = create_release(str(run), "old", str(tmp_path / "releases"), splits={"train": 1.0})
    tint = rel.store.read_table("triples").column("mouth_tint")
    assert len(tint) == rel.info["stats"]["triples"] > 0 and tint.null_count == len(tint)
    assert export_release(rel, "hf-parquet", str(tmp_path / "hf")).triples == len(tint)


def test_release_survives_deleting_the_run(tmp_path: Path):
    run = tmp_path / "run"
    write_synthetic_run(str(run), identities=8, candidates_per_round=40)
    create_release(str(run), "kept", str(tmp_path / "releases"), splits={"train": 1.0})
    shutil.rmtree(run)
    kept = open_release(str(tmp_path / "releases"), "kept")
    assert verify_release(kept).ok
    assert export_release(kept, "webdataset", str(tmp_path / "wds")).triples == kept.info["stats"]["triples"]


def test_verify_reports_every_tampered_file(finished_run, tmp_path: Path, capsys):
    root = tmp_path / "releases"
    create_release(finished_run.run_url, "tampered", str(root), splits=SPLITS)
    rel = open_release(str(root), "tampered")
    rows = _triples(rel)
    folder = Path(rel.root)
    flipped, deleted = folder / rows[0]["r_file"], folder / rows[-1]["t_file"]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    flipped.write_bytes(bytes(data))
    deleted.unlink()
    (folder / "images" / "00").mkdir(parents=True, exist_ok=True)  # releases keep no images of their own now
    (folder / "images" / "00" / "extra.png").write_bytes(b"not in the manifest")
    (folder / "README.md").write_text((folder / "README.md").read_text() + "\nedited\n")
    report = verify_release(rel)
    kinds = {(p.kind, p.path) for p in report.problems}
    assert ("sha256", rows[0]["r_file"]) in kinds
    assert ("missing", rows[-1]["t_file"]) in kinds
    assert ("unexpected", "images/00/extra.png") in kinds
    assert ("sha256", "README.md") in kinds and ("size", "README.md") in kinds
    assert ciep(["release", "verify", "tampered", "--releases-root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and rows[0]["r_file"] in out
    # A changed manifest shard is caught too (and then images are not trusted to it).
    shard = sorted((folder / "manifests" / "triples").iterdir())[0]
    shard.write_bytes(shard.read_bytes() + b"x")
    assert any(p.path.startswith("manifests/triples/") and p.kind == "sha256" for p in verify_release(rel).problems)


def test_diff_shows_added_removed_and_score_shifts(finished_run, release, tmp_path: Path, capsys):
    root = finished_run.releases_root
    r0 = create_release(finished_run.run_url, "round0-only", root, rounds=[0], splits=SPLITS)
    d = diff_releases(r0, release)
    assert {t["triple_id"] for t in d.added} == {r["triple_id"] for r in _triples(release) if r["round"] == 1}
    assert d.removed == [] and d.common == r0.info["stats"]["triples"]
    assert all(s["changed"] == 0 for s in d.score_shifts.values())
    back = diff_releases(release, r0)
    assert {t["triple_id"] for t in back.removed} == {t["triple_id"] for t in d.added}
    # Same triple ids, shifted scores: two synthetic runs.
    write_synthetic_run(str(tmp_path / "a"), identities=8, candidates_per_round=40)
    write_synthetic_run(str(tmp_path / "b"), identities=8, candidates_per_round=40, score_shift=0.01)
    sa = create_release(str(tmp_path / "a"), "sa", str(tmp_path / "rel"), splits={"train": 1.0})
    sb = create_release(str(tmp_path / "b"), "sb", str(tmp_path / "rel"), splits={"train": 1.0})
    shift = diff_releases(sa, sb).score_shifts["id_sim_rt"]
    assert shift["changed"] == sa.info["stats"]["triples"] and shift["mean_delta"] == pytest.approx(0.01, abs=1e-5)
    assert ciep(["release", "diff", "sa", "sb", "--releases-root", str(tmp_path / "rel")]) == 0
    assert "id_sim_rt     changed" in capsys.readouterr().out


def test_list_shows_releases_oldest_first(finished_run, release, capsys):
    names = [r["name"] for r in list_releases(finished_run.releases_root)]
    assert RELEASE in names
    assert ciep(["release", "list", "--output-root", finished_run.output_root]) == 0
    assert RELEASE in capsys.readouterr().out


def test_dataset_card_has_a_parsable_hf_header_and_the_prose(release):
    text = Path(release.root, "README.md").read_text()
    header = parse_card_header(text)
    stats = release.info["stats"]
    assert header["license"] == release.info["license"] == "cc-by-4.0"
    splits = {s["name"]: s["num_examples"] for s in header["dataset_info"]["splits"]}
    assert splits == {k: v["triples"] for k, v in stats["splits"].items() if v["triples"]}
    assert [c["split"] for c in header["configs"][0]["data_files"]] == list(splits)
    features = {f["name"]: f["dtype"] for f in header["dataset_info"]["features"]}
    assert features["source"] == features["reference"] == features["target"] == "image"
    assert features["id_sim_rt"] == "float32" and features["s_embedding"] == {"sequence": "float32"}
    for section in ("## How it was made", "## QC rules", "## Counts", "## Known limits", "## Splits"):
        assert section in text
    assert f"{stats['triples']} triples" in text and release.info["source"]["run_id"] in text
    assert json.loads(Path(release.root, "release.json").read_text())["files"]["README.md"]["sha256"] == \
        hashlib.sha256(text.encode()).hexdigest()


def test_ciep_query_spans_releases(finished_run, release, capsys):
    root = finished_run.releases_root
    if "round0-only" not in {r["name"] for r in list_releases(root)}:
        create_release(finished_run.run_url, "round0-only", root, rounds=[0], splits=SPLITS)
    sql = "select source, split, count(*) as n from triples group by all order by all"
    assert ciep(["query", "--output-root", finished_run.output_root, "--release", RELEASE,
                 "--release", "round0-only", "--format", "json", sql]) == 0
    got = {(r["source"], r["split"]): r["n"] for r in json.loads(capsys.readouterr().out)}
    expect = Counter((RELEASE, r["split"]) for r in _triples(release))
    expect.update(Counter(("round0-only", r["split"]) for r in _triples(open_release(root, "round0-only"))))
    assert got == dict(expect)


# -- one image pool per releases root; releases on Ray Data; ids by content, not by run name ----------------
def _pool_bytes(releases_root: Path) -> tuple[int, int]:
    files = [p for p in (releases_root / "_pool").rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_a_second_release_of_the_same_triples_adds_no_image_bytes(tmp_path: Path):
    run = tmp_path / "run"
    write_synthetic_run(str(run), identities=8, candidates_per_round=40)
    root = tmp_path / "releases"
    first = create_release(str(run), "first", str(root), splits={"train": 1.0})
    pool_after_first = _pool_bytes(root)
    assert not list(root.rglob("*.tmp-*"))
    assert pool_after_first[1] == first.info["stats"]["image_bytes"] == first.info["stats"]["pool_image_bytes_added"]
    second = create_release(str(run), "second", str(root), splits={"train": 1.0})
    assert _pool_bytes(root) == pool_after_first
    assert second.info["stats"]["pool_image_bytes_added"] == 0 and second.info["stats"]["image_bytes"] > 0
    assert not (Path(second.root) / "images").exists()
    assert verify_release(first).ok and verify_release(second).ok
    # verify still re-hashes every image a release references: a damaged pool image fails both releases.
    victim = Path(second.path(_triples(second)[0]["t_file"]))
    original = victim.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    for rel in (first, second):
        assert ("sha256", _triples(second)[0]["t_file"]) in {(p.kind, p.path) for p in verify_release(rel).problems}
    # Exports read pool images through the release.
    victim.write_bytes(original)
    assert verify_release(second).ok
    assert export_release(second, "imagefolder", str(tmp_path / "imf")).triples == second.info["stats"]["triples"]


def test_release_on_ray_data_equals_the_local_one(ray_session, tmp_path: Path):
    from pipeline.publish_on_ray import ray_file_mapper
    run = tmp_path / "run"
    write_synthetic_run(str(run), identities=8, candidates_per_round=60, rounds=2, commit_rows=20)
    root = tmp_path / "releases"
    here = create_release(str(run), "here", str(root), splits={"train": 0.5, "test": 0.5})
    on_ray = create_release(str(run), "onray", str(root), splits={"train": 0.5, "test": 0.5},
                            map_files=ray_file_mapper())
    assert len(ManifestStore.open(str(run)).committed_files("triples")) > 2  # several tasks
    def rows(rel):
        return sorted(({k: v for k, v in r.items() if k != "release"} for r in _triples(rel)),
                      key=lambda r: r["triple_id"])
    assert rows(on_ray) == rows(here)
    assert on_ray.info["stats"]["excluded_cross_split"] == here.info["stats"]["excluded_cross_split"] > 0
    assert on_ray.info["stats"]["pool_image_bytes_added"] == 0 and verify_release(on_ray).ok


def test_run_name_is_not_part_of_the_data_fingerprint():
    from pipeline.config import load_config
    a, b = load_config(overrides=["run.name=alpha"]), load_config(overrides=["run.name=beta"])
    assert a.data_fingerprint() == b.data_fingerprint() and a.resolved_run_id() != b.resolved_run_id()
    assert load_config(overrides=["run.seed=99"]).data_fingerprint() != a.data_fingerprint()


def test_two_runs_differing_only_in_name_release_the_same_triples(finished_run, release, tmp_path: Path):
    """A triple's id comes from its content (image hashes, models, seeds, data config), so `ciep release diff`
    between releases of two runs that made byte-identical triples shows them all in common."""
    from pipeline.run_idi import run_idi
    cfg = finished_run.cfg.model_copy(update={"run": finished_run.cfg.run.model_copy(update={"name": "renamed"})})
    result = run_idi(cfg)
    assert result["timing"]["run_id"] != finished_run.run_id
    other = create_release(result["timing"]["run_url"], "renamed-v1", finished_run.releases_root, splits=SPLITS)
    d = diff_releases(release, other)
    assert d.added == [] and d.removed == [] and d.common == d.count_a == d.count_b > 0
    assert all(s["changed"] == 0 for s in d.score_shifts.values())
    a = {r["triple_id"]: r for r in _triples(release)}
    for r in _triples(other):
        assert [r[f"{k}_sha256"] for k in "srt"] == [a[r["triple_id"]][f"{k}_sha256"] for k in "srt"]
        assert r["run_id"] != a[r["triple_id"]]["run_id"]
    # Same bytes, one pool: the second release wrote no image.
    assert other.info["stats"]["pool_image_bytes_added"] == 0
    assert verify_release(other).ok


def test_a_bad_image_fails_a_ray_release_with_the_plain_error(ray_session, tmp_path: Path):
    from pipeline.publish_on_ray import ray_file_mapper
    run = tmp_path / "run"
    write_synthetic_run(str(run), identities=8, candidates_per_round=40, commit_rows=10)
    _change_image_everywhere(run, "t")
    root = tmp_path / "releases"
    with pytest.raises(ReleaseError, match="changed since the run wrote it"):
        create_release(str(run), "v1", str(root), splits={"train": 1.0}, map_files=ray_file_mapper(), fsck=False)
    assert not (root / "v1").exists() and _staging_empty(root) and not list((root / "_claims").iterdir())


def test_progress_bars_for_create_verify_export_and_their_switch(tmp_path: Path, monkeypatch, capsys):
    run = tmp_path / "run"
    write_synthetic_run(str(run), identities=8, candidates_per_round=40)
    monkeypatch.setenv("CIEP_PROGRESS_BARS", "1")
    rel = create_release(str(run), "v1", str(tmp_path / "rel"), splits={"train": 1.0})
    verify_release(rel)
    export_release(rel, "webdataset", str(tmp_path / "wds"))
    err = capsys.readouterr().err
    for phase, unit in (("release v1", "shard/s"), ("verify v1", "triple/s"), ("export v1 webdataset", "triple/s")):
        assert phase in err and unit in err, err
    assert "100%" in err
    monkeypatch.setenv("CIEP_PROGRESS_BARS", "0")
    verify_release(rel)
    export_release(rel, "webdataset", str(tmp_path / "wds2"))
    assert capsys.readouterr().err == ""
