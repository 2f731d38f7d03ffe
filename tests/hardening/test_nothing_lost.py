"""Issue 11, "nothing lost silently": each numbered case reproduced through real runs (Ray, dlib, Parquet, DuckDB).

1  a full disk (a real tmpfs under images/reference, grown after the first run) and transient faults on 20 % of
   the items of every stage: items are retried by the rerun, which ends with the uninterrupted run's triples;
2, 6  every odd corpus entry ends as exactly one sources or rejects row;  3  a grown corpus is a new data version;
4, 5  one person under two names is one identity cluster; an exact copy in another folder leaves the original;
7  temp files are swept;  8  labels are normalised slugs, raw names kept, `ciep query` output stays one row a line.
(9, one-line errors, is in test_exit_codes.py; 10, idempotent training, in test_idempotent_training.py.)
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from manifests.query import connect, format_table
from manifests.store import ManifestStore
from pipeline.run_idi import main as run_idi_main
from pipeline.run_idi import run_idi
from stages.corpus import list_corpus, normalize_label
from tests.baseline_run import N_IDS
from tests.conftest import DEMO_CORPUS, REPO, london_identities, make_corpus
from tests.hardening.conftest import round_config, rows_that_matter
from tests.hardening.mounts import can_mount_here, mount_here
from tests.prerequisites import become_a_user_who_cannot_read, require

pytestmark = pytest.mark.slow

TABLES = ("sources", "candidates", "qc", "triples")


def _decided(store: ManifestStore, table: str) -> pa.Table:
    """rows_that_matter without the attempt column (a retried row says attempt 2; its content is the same)."""
    t = rows_that_matter(store, table)
    return t.drop_columns([c for c in ("attempt",) if c in t.column_names])


def _args(corpus: Path, out: Path, *extra: str) -> list[str]:
    sets = [f"corpus.root={corpus}", f"run.output_root={out}", "run.name=hard", "qc.expression.calibrate=false", *extra]
    return [a for s in sets for a in ("--set", s)]


def _store(out: Path, cfg) -> ManifestStore:
    return ManifestStore.open(str(out / cfg.resolved_run_id()))


def _refused_at(baseline) -> dict[str, str]:
    """candidate_id -> the stage that refused it in the clean run (the transfer's no_mouth_donor): such a candidate
    meets that stage's fault point and no later one."""
    candidates = baseline[2]["candidates"]
    return {c: st for c, st in zip(candidates["candidate_id"].to_pylist(), candidates["reject_stage"].to_pylist(),
                                   strict=True) if st}


@pytest.fixture(scope="module")
def corpus(baseline_run) -> Path:
    return baseline_run.corpus


@pytest.fixture(scope="module")
def baseline(baseline_run):
    return baseline_run.cfg, baseline_run.store, {t: _decided(baseline_run.store, t) for t in TABLES}


# -- case 1: a full disk, then space freed and the run rerun ---------------------------------------------------

def test_disk_full_then_rerun_after_space_is_freed_gives_every_triple(baseline, corpus, tmp_path):
    # the run's Ray workers write the images: the tmpfs must be mounted for every process (tests/hardening/mounts.py)
    require(can_mount_here(), "needs root to mount a small tmpfs that the run's Ray workers see")
    out = tmp_path / "runs"
    cfg = round_config(corpus, out)
    refs = out / cfg.resolved_run_id() / "images" / "reference"
    refs.mkdir(parents=True)
    # a real file system that holds about two of the six reference PNGs (~100 KB each)
    mount_here(refs, "size=240k")
    try:
        rc = run_idi_main(_args(corpus, out, "run.max_stage_error_rate=1.0"))
        store = _store(out, cfg)
        con = connect(store)
        failed = con.execute("select count(distinct item_id) from attempts").fetchone()[0]
        decided = con.execute("select count(*) from qc").fetchone()[0]
        assert rc == 3, "a run that left items to retry must not exit 0"
        assert failed >= 1 and failed + decided == 2 * N_IDS
        assert con.execute("select count(*) from attempts where detail like '%No space left on device%'"
                           ).fetchone()[0] == failed
        # nothing was decided for the failed items: no stage_error reject, no qc row
        assert con.execute("select count(*) from rejects where reason = 'stage_error'").fetchone()[0] == 0
        # case 7: the partial temp file of the failed write is swept at the end of the run
        assert not list(refs.glob("*.tmp-*"))
        # case 7: a temp file of a commit marker (as left by a kill during a commit) is swept at the start
        stray = out / cfg.resolved_run_id() / "manifests" / "_commits" / "gen-r0-x.json.tmp-0123abcd"
        stray.write_bytes(b"{")
        subprocess.run(["mount", "-o", "remount,size=64m", str(refs)], check=True)  # space is freed
        assert run_idi_main(_args(corpus, out)) == 0
        assert not stray.exists()
        for table in TABLES:
            assert _decided(store, table).equals(baseline[2][table]), f"{table} differs from the clean run"
        con = connect(store)  # the views list the files committed when they were made
        assert con.execute("select count(*) from qc where attempt = 2").fetchone()[0] == failed
        assert con.execute("select count(*) from triples").fetchone()[0] == baseline[2]["triples"].num_rows
    finally:
        subprocess.run(["umount", "-l", str(refs)], check=False)


# -- case 1: transient faults on 20 % of the items in every stage ---------------------------------------------

def test_transient_faults_on_a_fifth_of_the_items_of_every_stage_then_rerun(baseline, corpus, tmp_path):
    from core.faults import FaultInjectionConfig, targets

    out = tmp_path / "runs"
    keys = baseline[2]["sources"]["input_key"].to_pylist()
    cands = baseline[2]["qc"]["candidate_id"].to_pylist()
    stage_items = {"ingest": keys, "expression_transfer": cands, "identity_swap": cands, "qc": cands}
    refused_at = _refused_at(baseline)

    def hits(seed: int) -> set[tuple[str, str]]:
        """(stage, item) faulted on attempt 1; an item faulted or refused in one generation stage never reaches
        the next."""
        f = FaultInjectionConfig(at="*", action="raise", error="timeout", fraction=0.2, seed=seed, max_attempt=1)
        out, gone = set(), set()
        for st, items in stage_items.items():
            for i in items:
                if i not in gone and targets(f, st, i, 1):
                    out.add((st, i))
                    gone.add(i)
            gone.update(c for c, refused in refused_at.items() if refused == st)
        return out

    # a salt under which every stage has at least one faulted item (6 items a stage: 20 % may miss one)
    seed = next(s for s in range(1000) if {st for st, _ in hits(s)} == set(stage_items))
    expected = hits(seed)
    fault = ("run.fault_injection={at: '*', action: raise, error: timeout, fraction: 0.2, "
             f"seed: {seed}, max_attempt: 1}}")
    codes = []
    for _ in range(4):
        codes.append(run_idi_main(_args(corpus, out, fault)))
        if codes[-1] == 0:
            break
    assert codes[0] == 3 and codes[-1] == 0, codes
    store = _store(out, baseline[0])
    con = connect(store)
    failed = set(con.execute("select stage, item_id from attempts").fetchall())
    assert failed == expected and {st for st, _ in failed} == set(stage_items)
    for table in TABLES:
        assert _decided(store, table).equals(baseline[2][table]), f"{table} differs from the clean run"
    assert con.execute("select count(*) from rejects where reason = 'stage_error'").fetchone()[0] == 0


def test_transient_error_on_its_last_attempt_becomes_a_transient_stage_error_reject(baseline, corpus, tmp_path):
    out = tmp_path / "runs"
    refused = _refused_at(baseline)
    victim = next(c for c in baseline[2]["qc"]["candidate_id"].to_pylist() if c not in refused)  # reaches the swap
    fault = f"run.fault_injection={{at: identity_swap, item: '{victim}', action: raise, error: enospc}}"
    assert run_idi_main(_args(corpus, out, fault, "run.max_attempts=2")) == 3
    assert run_idi_main(_args(corpus, out, fault, "run.max_attempts=2")) == 0  # gave up: decided, exit 0
    con = connect(_store(out, baseline[0]))
    assert con.execute("select stage, reason, attempt, transient from rejects where item_id = ?", [victim]
                       ).fetchall() == [("identity_swap", "stage_error", 2, True)]
    assert con.execute("select attempt from attempts where item_id = ?", [victim]).fetchall() == [(1,)]


# -- cases 2 and 6: every entry of the corpus is accounted for -------------------------------------------------

def _small_face_jpeg() -> bytes:
    """A real face about 43 px wide on a 400 x 400 canvas: found only with upsampling, under min_face_size."""
    im = Image.open(DEMO_CORPUS / london_identities()[0] / "neutral.jpg").convert("RGB")
    canvas = Image.new("RGB", (400, 400), (128, 128, 128))
    canvas.paste(im.resize((im.width // 4, im.height // 4)), (100, 100))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def build_odd_corpus(base: Path) -> tuple[Path, dict[str, str]]:
    """A corpus of every odd entry; returns (root, {listed key: expected outcome})."""
    ids = london_identities()
    root = base / "corpus"
    outside = base / "outside"
    outside.mkdir()
    shutil.copy(DEMO_CORPUS / ids[5] / "neutral.jpg", outside / "face.jpg")
    (outside / "dir").mkdir()
    shutil.copy(DEMO_CORPUS / ids[5] / "smiling.jpg", outside / "dir" / "smiling.jpg")
    expect: dict[str, str] = {}
    for ident in ids[:2]:
        shutil.copytree(DEMO_CORPUS / ident, root / ident)
        expect.update({f"{ident}/neutral.jpg": "source", f"{ident}/smiling.jpg": "source"})
    # symlinks inside the root are followed: one identity of linked files, one linked identity folder
    store = root / "_store"
    store.mkdir()
    for e in ("neutral", "smiling"):
        shutil.copy(DEMO_CORPUS / ids[2] / f"{e}.jpg", store / f"{e}.jpg")
        (root / "linked_files").mkdir(exist_ok=True)
        os.symlink(store / f"{e}.jpg", root / "linked_files" / f"{e}.jpg")
        expect[f"linked_files/{e}.jpg"] = "source"
    shutil.copytree(DEMO_CORPUS / ids[3], root / "_real_dir")
    os.symlink(root / "_real_dir", root / "linked_dir")
    expect.update({"linked_dir/neutral.jpg": "source", "linked_dir/smiling.jpg": "source"})
    # symlinks out of the root are refused, with a reason
    os.symlink(outside / "face.jpg", root / ids[0] / "escape.jpg")
    expect[f"{ids[0]}/escape.jpg"] = "path_outside_corpus"
    os.symlink(outside / "dir", root / "escaped_dir")
    expect["escaped_dir/"] = "path_outside_corpus"
    os.symlink(root / "nowhere.jpg", root / ids[1] / "dangling.jpg")
    expect[f"{ids[1]}/dangling.jpg"] = "missing_file"
    # a folder named like an image, an empty identity, a file outside any identity folder, other odd names
    (root / ids[0] / "x.jpg").mkdir()
    expect[f"{ids[0]}/x.jpg"] = "nested_folder"
    (root / "empty_identity").mkdir()
    expect["empty_identity/"] = "empty_identity"
    (root / "loose.jpg").write_bytes((DEMO_CORPUS / ids[0] / "neutral.jpg").read_bytes())
    expect["loose.jpg"] = "not_in_identity_folder"
    (root / ids[1] / "notes.txt").write_text("not an image")
    expect[f"{ids[1]}/notes.txt"] = "unsupported_extension"
    (root / "small").mkdir()
    (root / "small" / "tiny.jpg").write_bytes(_small_face_jpeg())
    expect["small/tiny.jpg"] = "face_too_small"
    # case 8: accents and a newline in file names (labels become slugs; the raw name is kept)
    (root / "names").mkdir()
    shutil.copy(DEMO_CORPUS / ids[4] / "smiling.jpg", root / "names" / "José Ñ 01.jpg")
    shutil.copy(DEMO_CORPUS / ids[4] / "neutral.jpg", root / "names" / "neu\ntral.jpg")
    expect.update({"names/José Ñ 01.jpg": "source", "names/neu\ntral.jpg": "source"})
    (root / ".DS_Store").write_bytes(b"\0")  # hidden: not part of the corpus
    return root, expect


def _listed_entries(root: Path) -> set[str]:
    """Every entry a user sees under the root, as the keys rows are written under (hidden names left out)."""
    keys = set()
    for top in sorted(root.iterdir()):
        if top.name.startswith((".", "_")):
            continue
        if not top.is_dir() or (top.is_symlink() and not os.path.realpath(top).startswith(str(root))):
            keys.add(top.name if not top.is_symlink() else f"{top.name}/")
            continue
        entries = [e for e in top.iterdir() if not e.name.startswith(".")]
        keys.update(f"{top.name}/{e.name}" for e in entries)
        if not entries:
            keys.add(f"{top.name}/")
    return keys


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory, ray_session):
    base = tmp_path_factory.mktemp("odd")
    root, expect = build_odd_corpus(base)
    cfg = round_config(root, base / "runs")
    result = run_idi(cfg)
    return root, expect, ManifestStore.open(result["timing"]["run_url"]), result


def test_every_listed_entry_ends_as_exactly_one_sources_or_rejects_row(odd_run):
    root, expect, store, _ = odd_run
    con = connect(store)
    rows = [(k, "source") for (k,) in con.execute("select input_key from sources").fetchall()]
    rows += con.execute("select item_id, reason from rejects where stage = 'ingest'").fetchall()
    keys = [k for k, _ in rows]
    listed = _listed_entries(root)
    assert set(expect) == listed, "the test's expectations must cover every entry"
    assert sorted(keys) == sorted(listed), "every listed entry exactly once"
    got = dict(rows)
    assert {k: got[k] for k in expect} == expect
    detail = dict(con.execute("select item_id, detail from rejects").fetchall())
    assert "outside the corpus root" in detail[f"{london_identities()[0]}/escape.jpg"]
    assert "ingest.min_face_size=48" in detail["small/tiny.jpg"]


def test_labels_are_slugs_with_the_raw_name_kept_and_query_output_stays_one_row_per_line(odd_run):
    root, _, store, _ = odd_run
    con = connect(store)
    labels = dict(con.execute("select raw_name, expression from sources where identity = 'names'").fetchall())
    assert labels == {"José Ñ 01.jpg": "jose_n", "neu\ntral.jpg": "neu_tral"}
    assert normalize_label("Zoë  Ångström\t李") == "zoe_angstrom" and normalize_label("笑") == "笑"
    cols, rows = ["input_key"], con.execute("select input_key from sources order by 1").fetchall()
    assert len(format_table(cols, rows).splitlines()) == len(rows) + 2
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "query", "--output-root", str(Path(store.root).parent),
                           "--run", Path(store.root).name, "select input_key from sources order by 1"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.splitlines()) == len(rows) + 2 and "names/neu\\ntral.jpg" in proc.stdout


# -- case 3: a grown corpus ------------------------------------------------------------------------------------

def test_grown_corpus_is_a_new_data_version_equal_to_a_fresh_run(baseline, corpus, tmp_path):
    """The session's clean run is the fresh run of the grown corpus: the corpus is first run without its last
    identity (moved aside), then with it back, from the same folder (the folder is part of the data fingerprint)."""
    last = corpus / london_identities()[N_IDS - 1]
    out = tmp_path / "runs"
    shutil.move(last, tmp_path / last.name)
    try:
        first = run_idi(round_config(corpus, out))
    finally:
        shutil.move(tmp_path / last.name, last)
    first_store = ManifestStore.open(first["timing"]["run_url"])
    before = _decided(first_store, "triples")
    grown = run_idi(round_config(corpus, out))  # the same config, rerun on the grown corpus
    assert grown["timing"]["run_id"] != first["timing"]["run_id"]
    assert grown["timing"]["run_id"].startswith(first["timing"]["run_id"] + "-c")
    store = ManifestStore.open(grown["timing"]["run_url"])
    for table in TABLES:  # equal to the fresh run, but for the run id
        got = _decided(store, table).drop_columns(["run_id"])
        assert got.equals(baseline[2][table].drop_columns(["run_id"])), table
    assert store.read_table("qc").num_rows == 2 * N_IDS and store.read_table("triples").num_rows >= 1
    targets = store.read_table("candidates", ["target_source_id"])["target_source_id"].to_pylist()
    assert len(targets) == len(set(targets)), "no target used twice"
    assert _decided(first_store, "triples").equals(before), "the first version is left as it was"
    # a rerun of the grown corpus resumes its own version
    assert run_idi(round_config(corpus, out))["timing"]["run_id"] == grown["timing"]["run_id"]


# -- cases 4 and 5: one person under two names; an exact copy in another folder --------------------------------

def test_same_person_under_two_names_is_one_cluster_and_a_copied_file_leaves_the_original(tmp_path, ray_session):
    ids = london_identities()[:4]
    corpus = make_corpus(tmp_path / "corpus", ids)
    alias = corpus / "alias_of_first"
    alias.mkdir()
    for e in ("neutral", "smiling"):  # the same person, re-encoded: other bytes, the same face
        Image.open(DEMO_CORPUS / ids[0] / f"{e}.jpg").save(alias / f"{e}.jpg", quality=90)
    shutil.copy(corpus / ids[1] / "neutral.jpg", corpus / ids[2] / "copied.jpg")  # exact copy, wrong folder
    cfg = round_config(corpus, tmp_path / "runs", "release.splits={train: 0.5, test: 0.5}")
    result = run_idi(cfg)
    store = ManifestStore.open(result["timing"]["run_url"])
    con = connect(store)
    clusters = dict(con.execute("select identity, cluster from identity_clusters").fetchall())
    assert clusters["alias_of_first"] == clusters[ids[0]] == ids[0]
    assert len({clusters[i] for i in ids}) == 4
    sim = con.execute("select max_similarity from identity_clusters where identity = ?", [ids[0]]).fetchone()[0]
    assert sim > 0.99
    pairs = con.execute("select identity_i, identity_j from candidates").fetchall()
    assert pairs and all(clusters[i] != clusters[j] for i, j in pairs), "j is never the same person as i"
    # case 5: the real identity's copy survives, the copy in the other folder is the duplicate
    dup = con.execute("select item_id, detail from rejects where reason = 'duplicate_image'").fetchall()
    assert [d[0] for d in dup] == [f"{ids[2]}/copied.jpg"] and f"{ids[1]}/neutral.jpg" in dup[0][1]
    assert con.execute("select count(*) from candidates where target_source_id in (select source_id from "
                       "sources where input_key = ?)", [f"{ids[1]}/neutral.jpg"]).fetchone()[0] == 1
    # releases split by cluster: both names of the person land in the same split
    from publish.release.create import create_release
    from publish.release.read import open_release

    create_release(result["timing"]["run_url"], "dedup", str(tmp_path / "releases"),
                   splits={"train": 0.5, "test": 0.5})
    rel = connect(open_release(str(tmp_path / "releases"), "dedup").store)
    split_of = {}
    for ident, split in rel.execute("select identity_i, split from triples union select identity_j, split "
                                    "from triples").fetchall():
        split_of.setdefault(clusters[ident], set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())
    both = {s for (s,) in rel.execute("select split from triples where identity_i in (?, ?)",
                                      [ids[0], "alias_of_first"]).fetchall()}
    assert len(both) <= 1


def test_embedding_matrix_and_clusters_are_exact_on_a_tiny_case():
    from pipeline.planning.clusters import cluster_identities

    emb = np.array([[1, 0], [1, 0], [0.999, 0.0447], [0, 1]], dtype=np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    c = cluster_identities({"b": [0, 1], "a": [2], "z": [3]}, emb, 0.96)
    assert c.cluster_of == {"a": "a", "b": "a", "z": "z"} and c.size_of == {"a": 2, "z": 1}
    assert cluster_identities({"b": [0, 1], "a": [2], "z": [3]}, emb, None).size_of == {"a": 1, "b": 1, "z": 1}


def test_folder_listing_as_a_user_who_cannot_read_a_folder(tmp_path):
    """As root (who reads every folder) the listing runs as `nobody`; as any other user, as that user."""
    become = become_a_user_who_cannot_read()
    base = Path(f"/tmp/ciep-unreadable-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    try:
        make_corpus(base / "corpus", london_identities()[:2])
        (base / "corpus" / "locked").mkdir()
        (base / "corpus" / "locked" / "a.jpg").write_bytes(b"x")
        for p in [base, *base.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(base / "corpus" / "locked", 0o000)
        # imports first (the interpreter's own files may be readable by root only), then (as root) become `nobody`
        code = ("import json, os, sys; from stages.config import CorpusConfig; "
                "from stages.corpus import list_corpus; "
                f"{become}"
                f"l = list_corpus(CorpusConfig(root={str(base / 'corpus')!r})); "
                "print(json.dumps([(r['input_key'], r['reason']) for r in l.refused]))")
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip() == '[["locked/", "unreadable_folder"]]'
    finally:
        os.chmod(base / "corpus" / "locked", 0o755) if (base / "corpus" / "locked").exists() else None
        shutil.rmtree(base, ignore_errors=True)


def test_listing_digest_changes_with_the_corpus(tmp_path):
    from stages.config import CorpusConfig

    corpus = make_corpus(tmp_path / "c", london_identities()[:2])
    a = list_corpus(CorpusConfig(root=str(corpus))).digest
    assert a == list_corpus(CorpusConfig(root=str(corpus))).digest
    (corpus / london_identities()[0] / "more.jpg").write_bytes(b"x")
    assert list_corpus(CorpusConfig(root=str(corpus))).digest != a
