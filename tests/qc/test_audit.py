"""The labelled audit of generated R (qc/audit.py): a blind stratified draw, strict label reading, and estimates
that weigh each stratum by its size; `ciep audit sample` / `record` on a synthetic run, through DuckDB."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from manifests.query import connect
from manifests.runs import read_run_info
from manifests.store import ManifestStore
from manifests.synthetic import write_synthetic_run
from pipeline.cli import main as ciep
from qc.audit import AuditSample, audit_estimates, draw_order, draw_sample, read_labels


def _decided(n_acc: int, n_rej: int) -> list[dict]:
    return [dict(candidate_id=f"c{k:03d}", accepted=k < n_acc, r_path=f"r/{k}.png") for k in range(n_acc + n_rej)]


def test_draw_is_stratified_seeded_and_mixed():
    decided = _decided(40, 20)
    s = draw_sample(decided, {"accepted": 5, "rejected": 3}, seed=7, run_id="r", decision_version=2)
    assert s.population == {"accepted": 40, "rejected": 20}
    assert [r["stratum"] for r in s.rows].count("accepted") == 5 and len(s.rows) == 8
    assert [r["index"] for r in s.rows] == list(range(8))
    # within a stratum: the first in the seeded hash order; shown in that order, strata mixed
    acc = sorted((d for d in decided if d["accepted"]), key=lambda d: draw_order(7, d["candidate_id"]))
    assert {r["candidate_id"] for r in s.rows if r["stratum"] == "accepted"} == {d["candidate_id"] for d in acc[:5]}
    assert [r["candidate_id"] for r in s.rows] == sorted((r["candidate_id"] for r in s.rows),
                                                         key=lambda c: draw_order(7, c))
    again = draw_sample(list(reversed(decided)), {"accepted": 5, "rejected": 3}, 7, "r", 2)
    assert again.rows == s.rows  # the input's order does not matter
    other = draw_sample(decided, {"accepted": 5, "rejected": 3}, 8, "r", 2)
    assert {r["candidate_id"] for r in other.rows} != {r["candidate_id"] for r in s.rows}
    # asking for more than a stratum holds takes all of it
    assert len(draw_sample(decided, {"accepted": 100, "rejected": 0}, 7, "r", 2).rows) == 40
    assert AuditSample.from_json(s.to_json()) == s


def test_labels_are_read_strictly():
    s = draw_sample(_decided(4, 2), {"accepted": 2, "rejected": 2}, 0, "r", 0)
    ids = [r["candidate_id"] for r in s.rows]
    raw = ["Artificial", "fine", " skip ", "fine"]
    good = [dict(candidate_id=c, label=lab) for c, lab in zip(ids, raw, strict=True)]
    assert read_labels(good, s) == dict(zip(ids, ["artificial", "fine", "skip", "fine"], strict=True))
    for rows, says in (
            (good[:3], "1 sampled R have no row"),
            ([*good[:3], dict(candidate_id=ids[3], label="")], "label '' is not one of"),
            ([*good[:3], dict(candidate_id=ids[3], label="bad")], "label 'bad' is not one of"),
            ([*good, dict(candidate_id="zzz", label="fine")], "candidate 'zzz' is not in this sample"),
            ([*good, dict(candidate_id=ids[0], label="fine")], f"candidate {ids[0]} labelled twice")):
        with pytest.raises(ValueError, match=says):
            read_labels(rows, s)


def test_estimates_weigh_each_stratum_by_its_size():
    """80 accepted, 20 rejected; labelled: 2 of 10 accepted and 6 of 10 rejected R artificial. Artificial R in the
    run: 80 x 0.2 + 20 x 0.6 = 28, of which QC rejected 12 (42.9 %); fine: 72, rejected 8 (11.1 %)."""
    s = draw_sample(_decided(80, 20), {"accepted": 10, "rejected": 11}, 0, "r", 0)
    acc = [r["candidate_id"] for r in s.rows if r["stratum"] == "accepted"]
    rej = [r["candidate_id"] for r in s.rows if r["stratum"] == "rejected"]
    labels = {**{c: "artificial" if k < 2 else "fine" for k, c in enumerate(acc)},
              **{c: "artificial" if k < 6 else "fine" for k, c in enumerate(rej[:10])}, rej[10]: "skip"}
    est = audit_estimates(s, labels)
    a, r = est["strata"]["accepted"], est["strata"]["rejected"]
    assert (a["artificial"], a["artificial_share"]["n"], a["population"]) == (2, 10, 80)
    assert (r["artificial"], r["artificial_share"]["n"], r["skipped"]) == (6, 10, 1)
    assert a["artificial_share"]["value"] == pytest.approx(0.2)
    assert a["artificial_share"]["ci_low"] == pytest.approx(0.0567, abs=1e-3)  # Wilson, 2 of 10
    assert a["artificial_share"]["ci_high"] == pytest.approx(0.5098, abs=1e-3)
    assert est["artificial_rejected"]["value"] == pytest.approx(12 / 28)
    assert est["fine_rejected"]["value"] == pytest.approx(8 / 72)
    for k in ("artificial_rejected", "fine_rejected"):
        assert est[k]["ci_low"] < est[k]["value"] < est[k]["ci_high"]
    # a stratum with nothing labelled leaves the run-wide shares anywhere its size allows
    none_rej = audit_estimates(s, {**labels, **{c: "skip" for c in rej}})
    assert none_rej["strata"]["rejected"]["artificial_share"]["value"] is None
    assert none_rej["artificial_rejected"]["value"] is None
    assert none_rej["artificial_rejected"]["ci_low"] == 0.0 and none_rej["artificial_rejected"]["ci_high"] > 0.4
    # a stratum the run does not have (nothing rejected): QC rejected none of the artificial R
    only_acc = draw_sample(_decided(10, 0), {"accepted": 4}, 0, "r", 0)
    est = audit_estimates(only_acc, {r["candidate_id"]: "artificial" for r in only_acc.rows})
    assert est["artificial_rejected"]["value"] == 0.0 and est["fine_rejected"]["value"] is None


def test_audit_commands_on_a_run(tmp_path: Path, capsys):
    root = tmp_path / "runs"
    run_id = write_synthetic_run(str(root / "synthetic-a"), candidates_per_round=30, seed=2)
    out = tmp_path / "audit"
    assert ciep(["audit", "sample", "--output-root", str(root), "--out", str(out), "--accepted", "4",
                 "--rejected", "3", "--seed", "5"]) == 0
    sample = json.loads((out / "audit_sample.json").read_text())
    assert sample["run_id"] == run_id and len(sample["rows"]) == 7
    with Image.open(out / "audit_sheet.png") as sheet:
        assert sheet.size == (5 * 480, 2 * (336 + 16))
    rows = list(csv.DictReader((out / "audit.csv").open()))
    assert [r["candidate_id"] for r in rows] == [r["candidate_id"] for r in sample["rows"]]
    assert ciep(["report", "synthetic-a", "--output-root", str(root), "--out", str(tmp_path / "r0.html")]) == 0
    assert "Audit by eye" not in (tmp_path / "r0.html").read_text()  # no audit recorded yet
    assert ciep(["audit", "record", str(out), "--output-root", str(root)]) != 0  # nothing labelled yet
    assert "label '' is not one of" in capsys.readouterr().err
    for k, r in enumerate(rows):
        r["label"] = "artificial" if k % 2 else "fine"
    with (out / "audit.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert ciep(["audit", "record", str(out), "--output-root", str(root), "--by", "tester"]) == 0
    assert "artificial R that QC rejected" in capsys.readouterr().out
    store = ManifestStore.open(str(root / "synthetic-a"))
    con = connect(store)
    got = con.execute("select candidate_id, stratum, label, labelled_by from audit order by sheet_index").fetchall()
    strata = {r["candidate_id"]: r["stratum"] for r in sample["rows"]}
    assert got == [(r["candidate_id"], strata[r["candidate_id"]], r["label"], "tester") for r in rows]
    decided = dict(con.execute("select candidate_id, accepted from qc").fetchall())
    assert all(decided[c] == (s == "accepted") for c, s, _, _ in got)
    # recording the same sample again (a corrected label) replaces it
    rows[0]["label"] = "skip"
    with (out / "audit.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert ciep(["audit", "record", str(out), "--output-root", str(root)]) == 0
    con = connect(ManifestStore.open(str(root / "synthetic-a")))
    assert con.execute("select count(*), count(*) filter (where label = 'skip') from audit").fetchone() == (7, 1)
    audits = read_run_info(str(root / "synthetic-a"))["audit"]
    assert len(audits) == 1 and sum(s["skipped"] for s in next(iter(audits.values()))["strata"].values()) == 1
    capsys.readouterr()
    assert ciep(["query", "audit", "--output-root", str(root)]) == 0
    assert "stratum" in capsys.readouterr().out
    # the HTML report shows the audit beside the self-test
    assert ciep(["report", "synthetic-a", "--output-root", str(root), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Audit by eye" in page and next(iter(audits)) in page
    # a release of the run leaves out the accepted R a person labelled artificial, and its card shows the audit
    thrown = {r["candidate_id"] for r in rows if r["label"] == "artificial" and strata[r["candidate_id"]] == "accepted"}
    assert thrown
    assert ciep(["release", "create", "--output-root", str(root), "--run", "synthetic-a", "--name", "v1"]) == 0
    assert ciep(["release", "create", "--output-root", str(root), "--run", "synthetic-a", "--name", "v2",
                 "--keep-audited"]) == 0
    card = (root / "releases" / "v1" / "README.md").read_text()
    assert "## Audit by eye of the source run" in card and next(iter(audits)) in card
    assert f"labelled artificial in an audit of the run (`ciep audit`) were left out: {len(thrown)}." in card
    info = {v: json.loads((root / "releases" / v / "release.json").read_text()) for v in ("v1", "v2")}
    assert info["v1"]["stats"]["excluded_by_audit"] == len(thrown) and info["v2"]["stats"]["excluded_by_audit"] == 0
    released = {v: {t for (t,) in connect(ManifestStore.open(str(root / "releases" / v))).execute(
        "select triple_id from triples").fetchall()} for v in ("v1", "v2")}
    assert released["v1"].isdisjoint(thrown) and released["v2"] - released["v1"] == thrown & released["v2"]


def test_record_refuses_a_sample_of_another_run(tmp_path: Path, capsys):
    root = tmp_path / "runs"
    write_synthetic_run(str(root / "run-a"), candidates_per_round=12, seed=1)
    out = tmp_path / "audit"
    assert ciep(["audit", "sample", "--output-root", str(root), "--out", str(out), "--accepted", "2",
                 "--rejected", "2"]) == 0
    sample = json.loads((out / "audit_sample.json").read_text())
    (out / "audit_sample.json").write_text(json.dumps({**sample, "run_id": "someone-else"}))
    rows = list(csv.DictReader((out / "audit.csv").open()))
    with (out / "audit.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "label": "fine"} for r in rows)
    capsys.readouterr()
    assert ciep(["audit", "record", str(out), "--output-root", str(root)]) != 0
    assert "drawn from run someone-else" in capsys.readouterr().err
    assert ciep(["audit", "record", str(tmp_path / "nowhere"), "--output-root", str(root)]) != 0
    assert "has no audit_sample.json" in capsys.readouterr().err
    # nothing to draw (a run that rejected nothing, asked for rejected R only): said, no files written
    write_synthetic_run(str(root / "run-b"), candidates_per_round=6, seed=1, all_accepted=True)
    empty = tmp_path / "empty"
    assert ciep(["audit", "sample", "--output-root", str(root), "--run", "run-b", "--out", str(empty),
                 "--accepted", "0", "--rejected", "3"]) != 0
    assert "has no rejected R to draw (6 accepted, 0 rejected)" in capsys.readouterr().err
    assert not empty.exists()
