"""Untrusted names stay data (issue 20): a real round on a corpus whose identity folders, file names (hence labels)
and run name carry HTML/JS payloads; the run's and its release's reports rendered in headless Chromium run no
script of theirs and show every name as text; the dataset card and an export keep the names as data."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from publish.export import export_release
from publish.release.create import create_release
from publish.report import load_release, load_run, render_report
from tests.conftest import DEMO_CORPUS
from tests.report.test_report import _chromium, _require_chromium

# Identity folders (the payload and an <svg onload>), a file name (whose label ingest slugs), a run name.
IDENTITY_IMG = "<img src=x onerror=document.body.setAttribute('data-pwned',1)>"
IDENTITY_SVG = '"><svg onload=document.body.setAttribute("data-pwned",2)>'
FILE_PAYLOAD = "<img src=y onerror=document.body.setAttribute('data-pwned',3)>smiling.jpg"
RUN_NAME = "<b onmouseover=alert(document.domain)>run"
IDENTITIES = {"002": IDENTITY_IMG, "005": IDENTITY_SVG, "006": "006", "007": "007"}


class _Dom(HTMLParser):
    """Elements (tag, attrs) and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _dom(page: str) -> _Dom:
    d = _Dom()
    d.feed(page)
    return d


def _no_payload_elements(dom: _Dom) -> None:
    """No element the payloads would make: every payload tag carries an event-handler attribute (<img src=x|y
    onerror>, <svg onload>, <b onmouseover>); the page's own elements carry none."""
    for tag, attrs in dom.elements:
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        assert attrs.get("src") not in ("x", "y"), (tag, attrs)


@pytest.fixture(scope="module")
def payload_run(tmp_path_factory, ray_session):
    from pipeline.config import load_config
    from pipeline.run_idi import run_idi

    base = tmp_path_factory.mktemp("payload")
    corpus = base / "corpus"
    for src, name in IDENTITIES.items():
        shutil.copytree(DEMO_CORPUS / src, corpus / name)
    (corpus / IDENTITY_SVG / "smiling.jpg").rename(corpus / IDENTITY_SVG / FILE_PAYLOAD)
    cfg = load_config(overrides=[f"corpus.root={corpus}", f"run.output_root={base / 'runs'}", f"run.name={RUN_NAME}",
                                 "run.rounds=1", "qc.expression.calibrate=false",  # 4 identities certify nothing
                                 "qc.expression.max_prob_distance=1.0",
                                 "qc.expression.max_lazy_distance=0.0", "qc.expression.min_gain=-1.0",
                                 "qc.expression.min_contrast=-1000"])
    result = run_idi(cfg)
    run_url = result["timing"]["run_url"]
    release = create_release(run_url, "payload-v1", str(base / "releases"), splits={"train": 1.0})
    return base, run_url, release


def _render_in_chromium(page: str, tmp_path: Path, name: str) -> str:
    html_path = tmp_path / f"{name}.html"
    html_path.write_text(page)
    done = _chromium(["--dump-dom", "--window-size=1280,2000", "--virtual-time-budget=5000", html_path.as_uri()],
                     tmp_path)
    return done.stdout


def test_reports_run_no_script_of_the_corpus_and_show_names_as_text(payload_run, tmp_path: Path):
    _require_chromium()
    _, run_url, release = payload_run
    for name, data in (("run", load_run(run_url)), ("release", load_release(release))):
        identities = {it.identity_i for it in data.items} | {it.identity_j for it in data.items}
        assert {IDENTITY_IMG, IDENTITY_SVG} <= identities, identities  # the names reached the manifests verbatim
        page = render_report(data)
        assert "Content-Security-Policy" in page and "unsafe-inline" not in page
        _no_payload_elements(_dom(page))
        dom_text = _render_in_chromium(page, tmp_path, name)
        body = re.search(r"<body[^>]*>", dom_text)
        assert body, dom_text[:300]
        assert "data-pwned" not in body.group(0), body.group(0)
        assert 'data-broken-images="0"' in body.group(0), body.group(0)  # our own script ran under the CSP
        rendered = _dom(dom_text)
        _no_payload_elements(rendered)
        text = "".join(rendered.text)
        assert IDENTITY_IMG in text and IDENTITY_SVG in text, name  # shown as text, exactly
        if name == "run":
            assert RUN_NAME in text and FILE_PAYLOAD in text  # the run name and T's file name


def test_card_and_export_keep_payload_names_as_data(payload_run, tmp_path: Path):
    from markdown_it import MarkdownIt

    base, _, release = payload_run
    card = (Path(release.root) / "README.md").read_text()
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(card)  # a hub renders HTML in cards
    dom = _dom(html)
    _no_payload_elements(dom)
    text = "".join(dom.text)
    assert RUN_NAME in text  # the source run's id starts with its name
    out = base / "export"
    export_release(release, "imagefolder", str(out))
    meta = [json.loads(line) for line in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    names = {m["identity_i"] for m in meta} | {m["identity_j"] for m in meta}
    assert {IDENTITY_IMG, IDENTITY_SVG} & names  # exports carry the names verbatim (JSON-escaped, not mangled)
    assert all("expr_contrast_st" in m and "id_margin_ji" in m for m in meta)
