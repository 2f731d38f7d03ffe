"""The report, contact sheets and dataset card show every deciding check (qc/decide.py DECIDING_CHECKS) with its
threshold, say "off" where a threshold is not calibrated, render the run's self-test, fit the window, and read
releases made before the v4 score columns. Synthetic runs: no Ray."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from markupsafe import escape

from manifests.schemas import QC_SCORES, TRIPLE_SCORES
from manifests.synthetic import write_synthetic_run
from publish.contact_sheet import caption_lines, score_cells, sheet_jpeg
from publish.decision_view import OFF
from publish.export import export_release
from publish.release.create import create_release
from publish.report import load_release, load_run, render_report
from publish.templates import md_escape
from qc.decide import DECIDING_CHECKS
from tests.report.test_report import _chromium, _require_chromium

SELFTEST = {"classes": [
    {"class": "happy", "judged": True, "right_pass": 0.81, "right_pass_ci": [0.7, 0.9], "wrong_pass": 0.031,
     "wrong_pass_ci": [0.01, 0.06], "auc": 0.95, "n_right": 40, "n_wrong": 100, "threshold": 0.4},
    {"class": "fearful", "judged": False, "n_right": 3}], "max_false_pass": 0.05}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("decisions") / "run")
    write_synthetic_run(url, identities=6, candidates_per_round=30, rounds=2, ingest_rejects=2)
    return url


def _with(data, **thresholds):
    """The run's rows as if judged with these thresholds, and a contrast score on every row."""
    for k, it in enumerate(data.items):
        th = json.loads(it.thresholds)
        th.update(thresholds)
        it.thresholds = json.dumps(th)
        it.scores["expr_contrast_st"] = (k % 7) / 3 - 1.0
        it.scores["expr_prob_dist_rt"] = (k % 5) / 5
    return data


def test_every_deciding_check_shows_its_threshold_or_says_off(run):
    data = _with(load_run(run), min_expression_contrast=None,
                 max_expression_prob_distance={"smiling": 0.35, "neutral": None})
    page = render_report(data)
    checks = page[page.index("<h2>Checks that decide</h2>"):page.index("<h2>Self-test")]
    for c in DECIDING_CHECKS:
        assert str(escape(c.title)) in checks and f"<code>{c.score}</code>" in checks, c.score  # as the template
    row = re.search(r"<td>expression contrast: R past the S/T midpoint</td>.*?</tr>", checks).group(0)
    assert OFF in row and 'class="text off"' in row
    assert "per class of T: neutral: off; smiling: ≤ 0.35" in checks
    assert "≤ 0.9" in checks and "≥ 20" in checks  # the leak and sharpness thresholds of the synthetic run
    hist = page[page.index("<h2>Score distributions</h2>"):page.index("<h2>Contact sheets</h2>")]
    scored = [c for c in DECIDING_CHECKS if any(it.scores.get(c.score) is not None for it in data.items)]
    assert hist.count("<figure>") == len(scored) >= 6  # every scored check plotted, not the four old ones
    assert f'<code>expr_contrast_st</code>: <span class="off">{OFF}</span>' in hist


def test_contact_sheet_captions_carry_thresholds_and_failures(run):
    data = _with(load_run(run), min_expression_contrast=0.0)
    item = next(it for it in data.items if it.scores["expr_contrast_st"] < 0)
    cells = {c["name"]: c for c in score_cells(item, {})}
    assert cells["expr_contrast_st"]["failed"] and cells["expr_contrast_st"]["threshold"] == "≥ 0"
    assert cells["id_sim_rt"]["threshold"] == "≤ 0.9"
    jpeg = sheet_jpeg(data.items[:4], data.read)
    assert jpeg[:2] == b"\xff\xd8"
    # the JPEG's captions are drawn with Pillow's default font, which has no glyph for the signs: ASCII ones
    lines = caption_lines(item, {})
    assert all(line.isascii() for line in lines) and "(>= 0)" in " ".join(lines), lines


def test_selftest_section_renders_per_class_rows_or_says_none(run):
    data = load_run(run)
    assert "no self-test in this run" in render_report(data)
    data.info["selftest"] = SELFTEST
    page = render_report(data)
    section = page[page.index("<h2>Self-test"):page.index("<h2>Score distributions</h2>")]
    assert "no self-test" not in section
    for text in ("<th>right_pass_ci</th>", "<td>happy</td>", "<td>yes</td>", "<td>[0.700, 0.900]</td>",
                 "<td>fearful</td>", "<td>no</td>", "<code>max_false_pass</code>: 0.050"):
        assert text in section, text


def test_report_fits_the_window_and_runs_only_its_own_script(run, tmp_path: Path):
    _require_chromium()
    data = _with(load_run(run), max_expression_prob_distance={f"class_{k}": 0.1 * k for k in range(7)})
    data.info["selftest"] = SELFTEST
    for it in data.items:  # long unbreakable names and many reasons
        it.identity_i = "identity_" + "x" * 150
        it.reasons = it.reasons + ["mouth_state_mismatch", "expression_nearer_s"] if not it.accepted else it.reasons
    page = render_report(data)
    path = tmp_path / "wide.html"
    path.write_text(page)
    for width in (800, 1280):
        dom = _chromium(["--dump-dom", f"--window-size={width},1200", "--virtual-time-budget=5000", path.as_uri()],
                        tmp_path).stdout
        body = re.search(r"<body[^>]*>", dom).group(0)
        scroll = int(re.search(r'data-scroll-width="(\d+)"', body).group(1))  # set by the page's own script
        view = int(re.search(r'data-viewport-width="(\d+)"', body).group(1))
        assert scroll <= view, (width, scroll, view)


def test_card_escapes_names_and_lists_every_check(run, tmp_path: Path):
    from markdown_it import MarkdownIt

    rel = create_release(run, "cards", str(tmp_path / "releases"), splits={"train": 1.0})
    info = json.loads((Path(rel.root) / "release.json").read_text())
    payload = "<img src=x onerror=alert(1)>|`*_[x](javascript:alert(1))"
    info["created_by"], info["source"]["run_id"] = payload, payload
    info["stats"]["expressions"] = {payload: 3}
    info["selftest"] = {"classes": [dict(SELFTEST["classes"][0], **{"class": payload})]}
    from publish.dataset_card import render_card
    card = render_card(info)
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(card)
    assert "<a " not in html and "<img" not in html  # no tag or link of theirs
    assert html.count(payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")) >= 4
    for c in DECIDING_CHECKS:
        assert md_escape(c.title) in card, c.title


def test_old_release_without_v4_scores_still_reports_and_exports(run, tmp_path: Path):
    rel = create_release(run, "old", str(tmp_path / "releases"), splits={"train": 1.0})
    new = [s for s in TRIPLE_SCORES if s not in QC_SCORES]
    for f in rel.store.committed_files("triples"):  # a format-2 release: the v4 score columns absent
        t = pq.read_table(f)
        pq.write_table(t.drop_columns([c for c in new if c in t.column_names]), f)
    page = render_report(load_release(rel))
    assert "Checks that decide" in page and "sharpness of R" in page
    out = tmp_path / "export"
    export_release(rel, "imagefolder", str(out))
    meta = [json.loads(x) for x in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    assert meta and all(m["expr_contrast_st"] is None and m["id_sim_rt"] is not None for m in meta)
