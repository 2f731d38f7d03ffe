"""The template engine of every rendered page (Jinja2): HTML with autoescape, Markdown with a Markdown-and-HTML
escape applied to every `{{ ... }}`, so a name from the corpus, an index or a config is shown as text, never run.
Templates live in publish/templates/."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup

TEMPLATES = Path(__file__).resolve().parent / "templates"

# Markdown (CommonMark/GFM) punctuation that can start markup inline or end a table cell: backslash-escaped (the
# template never puts a value at the start of a line, where #, +, - and digits would matter; ( is harmless once [
# is escaped). <, >
# and & become entities, so no HTML tag or entity of the value's own reaches a renderer (a model hub renders card
# Markdown with HTML).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}


def md_escape(value: object) -> str:
    """A value as Markdown text that renders exactly as the value (one line: newlines become spaces)."""
    text = re.sub(r"[\r\n\t]+", " ", str(value))
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return "".join(_MD_ENTITIES.get(ch, ch) for ch in text)


def _md_finalize(value: object) -> object:
    """Applied to every expression of a Markdown template: escape unless the template marked it safe."""
    if isinstance(value, Markup):
        return str(value)
    if value is None:
        return "–"
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return md_escape(value)


def md_code(value: object, in_table: bool = False) -> Markup:
    """A value as an inline code span whose fence is longer than any backtick run in it (code spans show their
    content literally, HTML included); in a table cell a pipe is escaped (GFM unescapes it there)."""
    text = re.sub(r"[\r\n\t]+", " ", str(value))
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markup(f"{fence}{pad}{text}{pad}{fence}")


def fmt(value: object, digits: int = 4) -> str:
    """Numbers for tables: floats to `digits`, None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _common(env: jinja2.Environment) -> jinja2.Environment:
    env.filters["fmt"] = fmt
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.1%}"
    return env


@cache
def html_env() -> jinja2.Environment:
    """HTML templates: every value is escaped unless marked `Markup` (our CSS, our script, data URIs we made)."""
    return _common(jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True))


@cache
def markdown_env() -> jinja2.Environment:
    """Markdown templates (the dataset card): every value Markdown- and HTML-escaped by `finalize`."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False, finalize=_md_finalize,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["code"] = md_code
    env.filters["cell_code"] = lambda v: md_code(v, in_table=True)
    env.filters["raw"] = Markup  # for text the template builds from our own words only
    return _common(env)


def csp_hash(text: str) -> str:
    """A CSP hash source for an inline <style> or <script> whose content is exactly `text`."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy(styles: list[str], scripts: list[str]) -> str:
    """Nothing from the network, images only as data: URIs, and only the inline style and script we wrote."""
    return ("default-src 'none'; img-src data:; "
            f"style-src {' '.join(csp_hash(s) for s in styles)}; script-src {' '.join(csp_hash(s) for s in scripts)}; "
            "base-uri 'none'; form-action 'none'")
