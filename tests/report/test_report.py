"""The QC report of a real run and of its release: self-contained HTML (no network), every embedded image
decodes, and headless Chromium renders a non-blank page with no broken image."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from manifests.synthetic import write_synthetic_run
from pipeline.cli import main as ciep
from publish import plots
from publish.contact_sheet import SheetItem, worst_first
from publish.report import load_release, load_run, render_report
from tests.prerequisites import require

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_ATTR = re.compile(r"""\b(src|href)\s*=\s*["']([^"']*)["']""", re.I)


def _check_self_contained(page: str) -> int:
    """No http(s) in any src/href; every data: URI decodes as the image it claims. Returns the image count."""
    refs = _ATTR.findall(page)
    assert refs, "no images at all"
    assert not [v for _, v in refs if re.match(r"\s*(https?:)?//", v, re.I)]
    assert "@import" not in page and "url(http" not in page
    images = 0
    for attr, value in refs:
        assert attr.lower() == "src" and value.startswith("data:image/"), value[:60]
        mime, b64 = value[5:].split(";base64,", 1)
        data = base64.b64decode(b64, validate=True)
        if mime == "image/svg+xml":
            assert ET.fromstring(data).tag.endswith("svg")
        else:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                assert im.width > 10 and im.height > 10
        images += 1
    return images


def test_run_report_has_every_section_and_only_embedded_images(finished_run, tmp_path: Path):
    page = render_report(load_run(finished_run.run_url))
    n = _check_self_contained(page)
    for text in ("Pass rate and rejection reasons per round", "Rejects table", "Score distributions",
                 "identity leak", "swap success", "expression distance", "Contact sheets", "Accepted (",
                 "Rejected (", "Round over round", "round 1"):
        assert text in page, text
    assert n >= 4 + 2  # outcome chart, 4 histograms, trend chart, contact strips
    out = tmp_path / "r.html"
    assert ciep(["report", finished_run.run_id, "--output-root", finished_run.output_root, "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000


def test_release_report_says_it_holds_accepted_triples_only(release):
    page = render_report(load_release(release))
    _check_self_contained(page)
    assert "accepted triples only" in page and "Rejected (" not in page
    assert release.info["source"]["run_id"] in page


def test_report_lists_the_rejects_table_and_survives_missing_images(tmp_path: Path):
    run = tmp_path / "run"
    write_synthetic_run(str(run), identities=6, candidates_per_round=30, rounds=2, ingest_rejects=3)
    for p in list((run / "images" / "reference").iterdir())[:3]:
        p.unlink()
    page = render_report(load_run(str(run)))
    _check_self_contained(page)
    # the rejects table's row of the 3 ingest rejects: round, stage, reason, items
    assert "<tr><td>0</td><td>ingest</td><td>no_face</td><td>3</td></tr>" in page
    assert "Rejected (" in page and "identity_leak" in page


def test_worst_first_orders_rejected_by_violation_and_accepted_by_margin():
    th = {"max_leak_similarity": 0.9, "min_swap_similarity": 0.9, "max_expression_distance": 0.12,
          "min_sharpness": 20.0}

    def item(i, acc, reasons, rt=0.5, rj=0.95, ex=0.05, sh=100.0, face=True):
        return SheetItem(i, 0, acc, reasons[0] if reasons else "accepted", reasons, face, None, None, None,
                         scores={"id_sim_rt": rt, "id_sim_rj": rj, "expr_dist_rt": ex, "sharpness": sh})
    rejected = [item("a", False, ["identity_leak"], rt=0.91), item("b", False, ["identity_leak"], rt=0.99),
                item("c", False, ["identity_leak", "expression_lost"], rt=0.92, ex=0.2),
                item("d", False, ["qc_no_face"], face=False)]
    assert [i.item_id for i in worst_first(rejected, th)] == ["c", "d", "b", "a"]
    accepted = [item("far", True, [], rt=0.3), item("near", True, [], rt=0.895), item("mid", True, [], ex=0.1)]
    assert [i.item_id for i in worst_first(accepted, th)] == ["near", "mid", "far"]


def _require_chromium() -> None:
    require(CHROMIUM is not None, "Chromium not installed (Debian package `chromium`; .ci/run installs it): no "
                                  "headless render of the report")


def _chromium(args: list[str], tmp_path: Path, timeout: int = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=timeout)


def test_outcome_chart_draws_accepted_green_and_rejected_red_bars():
    uri = plots.reasons_by_round([0, 1], {"accepted": [3, 4], "identity_leak": [2, 1], "qc_blurry": [0, 2]},
                                 [0.6, 0.57])
    svg = base64.b64decode(uri.split(";base64,", 1)[1]).decode()
    fills = re.findall(r'<path d="[^"]*"[^>]*style="fill: (#[0-9a-f]{6})', svg)
    assert fills.count(plots.ACCEPT_COLOR) == 3  # one accepted bar per round + its legend patch
    assert fills.count(plots.REJECT_COLOR) == 3  # the first rejection reason is drawn red, same
    assert plots.REJECT_COLOR == "#c62828" and plots.ACCEPT_COLOR == "#2e7d32"


def _green(px: np.ndarray) -> float:
    return float(((px[..., 1] > 100) & (px[..., 0] < 80) & (px[..., 2] < 80)).mean())


def _red(px: np.ndarray) -> float:
    return float(((px[..., 0] > 150) & (px[..., 1] < 80) & (px[..., 2] < 80)).mean())


def test_report_renders_in_headless_chromium(finished_run, tmp_path: Path):
    _require_chromium()
    html_path = tmp_path / "report.html"
    html_path.write_text(render_report(load_run(finished_run.run_url)))
    img_tags = html_path.read_text().count("<img ")
    shot = tmp_path / "shot.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars",
                      "--virtual-time-budget=5000", html_path.as_uri()], tmp_path)
    assert shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as im:
        px = np.asarray(im.convert("RGB"), dtype=float)
    assert px.shape[:2] == (2000, 1280)
    assert px.std() > 20, "screenshot is blank"
    non_white = (px.min(axis=2) < 235).mean()
    assert non_white > 0.05, f"screenshot is almost empty ({non_white:.1%} non-white pixels)"
    # Green (accepted) bars of the QC outcome chart are on screen (this real run accepts everything).
    assert _green(px) > 0.001
    dom = _chromium(["--dump-dom", "--virtual-time-budget=5000", html_path.as_uri()], tmp_path).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    assert f'data-images="{img_tags}"' in body.group(0) and 'data-broken-images="0"' in body.group(0), body.group(0)


def test_rejected_bars_render_red_in_headless_chromium(tmp_path: Path):
    _require_chromium()
    run = tmp_path / "run"
    write_synthetic_run(str(run), identities=6, candidates_per_round=30, rounds=2)
    html_path = tmp_path / "report.html"
    html_path.write_text(render_report(load_run(str(run))))
    shot = tmp_path / "shot.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1280,1000", "--hide-scrollbars",
                      "--virtual-time-budget=5000", html_path.as_uri()], tmp_path)
    assert shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as im:
        px = np.asarray(im.convert("RGB"), dtype=float)
    # the QC outcome chart (top of the page): accepted bars green, the first rejection reason's bars red
    assert _green(px) > 0.002 and _red(px) > 0.002, (_green(px), _red(px))
