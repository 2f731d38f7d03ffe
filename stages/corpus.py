"""List a corpus into ingest work items: `<root>/<identity>/<file>` folders or a Parquet/CSV index."""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import unicodedata
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from core.location import Location
from manifests.store import full_url
from stages.config import CorpusConfig

WORK_ITEM_SCHEMA = pa.schema([
    pa.field("input_key", pa.string(), nullable=False),
    pa.field("identity", pa.string(), nullable=False),
    pa.field("expression", pa.string()),
    pa.field("path", pa.string(), nullable=False),
    pa.field("raw_name", pa.string()),  # the file name as listed; `expression` is its normalised label
])

_TRAILING_INDEX = re.compile(r"[_\-]\d+$")


@dataclass
class CorpusListing:
    items: pa.Table  # WORK_ITEM_SCHEMA
    refused: list[dict]  # {input_key, identity, path, reason, detail}
    # what defines this corpus version: every listed key (and size) and refusal, or the index file's bytes
    digest: str = field(default="")


class CorpusError(ValueError):
    """The corpus root or index cannot be read at all."""


def normalize_label(raw: str) -> str | None:
    """An expression label as a slug: Unicode NFC, ASCII-folded ("José Ñ" -> "jose n"), lower case, runs of other
    characters (spaces, newlines, punctuation) as one "_". Labels of only non-Latin letters keep them (NFC)."""
    text = unicodedata.normalize("NFC", raw)
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "_", folded.lower()).strip("_")
    if not slug:
        slug = re.sub(r"[\W_]+", "_", text.lower()).strip("_")
    return slug or None


def _label_from_name(name: str) -> str | None:
    stem = posixpath.splitext(name)[0]
    label = normalize_label(stem)
    return _TRAILING_INDEX.sub("", label) if label else None


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:12]


def list_corpus(cfg: CorpusConfig) -> CorpusListing:
    corpus = cfg.location
    fs, root = corpus.fs, corpus.path
    if not fs.exists(root) or not fs.isdir(root):
        raise CorpusError(f"corpus root {cfg.root!r} does not exist or is not a folder")
    if cfg.index:
        return _list_index(corpus, cfg)
    return _list_folders(fs, root, cfg)


def _local_target(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """The resolved target of a local symlink, else None (object stores have no links)."""
    if isinstance(fs, LocalFileSystem) and os.path.islink(path):
        return os.path.realpath(path)
    return None


def _inside(path: str, root: str) -> bool:
    real_root = os.path.realpath(root)
    return path == real_root or path.startswith(real_root.rstrip("/") + "/")


def _list_folders(fs: fsspec.AbstractFileSystem, root: str, cfg: CorpusConfig) -> CorpusListing:
    """Every entry under the root gets an item or a refusal with a reason, except names starting with "." or
    "_" (hidden and tool folders, e.g. .DS_Store). Symlinks are followed when they resolve inside the root."""
    rows, refused, parts = [], [], []
    exts = tuple(e.lower() for e in cfg.extensions)

    def refuse(key: str, identity: str | None, path: str, reason: str, detail: str) -> None:
        refused.append(dict(input_key=key, identity=identity, path=path, reason=reason, detail=detail))
        parts.append(f"{key}\0{reason}")

    for ident_dir in sorted(fs.ls(root, detail=True), key=lambda d: d["name"]):
        identity = posixpath.basename(ident_dir["name"].rstrip("/"))
        if identity.startswith((".", "_")):
            continue
        dir_path, dir_type = ident_dir["name"], ident_dir["type"]
        target = _local_target(fs, dir_path)
        if target is not None:
            if not _inside(target, root):
                refuse(f"{identity}/", identity, dir_path, "path_outside_corpus",
                       f"symlink to {target!r}, outside the corpus root {root!r}")
                continue
            dir_type = "directory" if os.path.isdir(target) else "file" if os.path.isfile(target) else "missing"
        if dir_type != "directory":
            refuse(identity, None, full_url(fs, dir_path), "not_in_identity_folder",
                   f"{dir_type} directly under the corpus root; images go in <root>/<identity>/")
            continue
        try:
            entries = sorted(fs.ls(dir_path, detail=True), key=lambda d: d["name"])
        except (PermissionError, OSError) as err:
            refuse(f"{identity}/", identity, full_url(fs, dir_path), "unreadable_folder",
                   f"{type(err).__name__}: {err}")
            continue
        if isinstance(fs, LocalFileSystem) and not os.access(dir_path, os.R_OK | os.X_OK):
            refuse(f"{identity}/", identity, full_url(fs, dir_path), "unreadable_folder", "no read permission")
            continue
        listed = 0
        for entry in entries:
            name = posixpath.basename(entry["name"].rstrip("/"))
            if name.startswith("."):
                continue
            listed += 1
            key = f"{identity}/{name}"
            url = full_url(fs, entry["name"])
            kind, size = entry["type"], entry.get("size")
            target = _local_target(fs, entry["name"])
            if target is not None:
                if not _inside(target, root):
                    refuse(key, identity, url, "path_outside_corpus",
                           f"symlink to {target!r}, outside the corpus root {root!r}")
                    continue
                if not os.path.exists(target):
                    refuse(key, identity, url, "missing_file", f"dangling symlink to {target!r}")
                    continue
                kind = "directory" if os.path.isdir(target) else "file"
                size = os.path.getsize(target)
            if kind == "directory":
                refuse(key, identity, url, "nested_folder",
                       "a folder inside an identity folder (only <root>/<identity>/<file> is read)")
                continue
            if kind != "file":
                refuse(key, identity, url, "not_a_file", f"entry of type {kind!r}")
                continue
            if not name.lower().endswith(exts):
                refuse(key, identity, url, "unsupported_extension", f"extension not in {list(exts)}")
                continue
            label = _label_from_name(name) if cfg.expression_from_filename else None
            rows.append(dict(input_key=key, identity=identity, expression=label, path=url, raw_name=name))
            parts.append(f"{key}\0{size}")
        if not listed:
            refuse(f"{identity}/", identity, full_url(fs, dir_path), "empty_identity", "identity folder has no files")
    return CorpusListing(pa.Table.from_pylist(rows, schema=WORK_ITEM_SCHEMA), refused, _digest(parts))


def _read_index(corpus: Location, index_url: str) -> pa.Table:
    try:
        with corpus.open_url(index_url) as fh:
            data = fh.read()
    except FileNotFoundError:
        raise CorpusError(f"corpus index {index_url!r} not found") from None
    if index_url.lower().endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
    elif index_url.lower().endswith((".csv", ".tsv")):
        opts = pacsv.ParseOptions(delimiter="\t" if index_url.lower().endswith(".tsv") else ",")
        table = pacsv.read_csv(io.BytesIO(data), parse_options=opts,
                               convert_options=pacsv.ConvertOptions(strings_can_be_null=True,
                                                                    column_types={"identity": pa.string()}))
    else:
        raise CorpusError(f"corpus index {index_url!r} must be .parquet, .csv or .tsv")
    missing = {"identity", "path"} - set(table.column_names)
    if missing:
        raise CorpusError(f"corpus index {index_url!r} lacks column(s) {sorted(missing)}")
    return table


def _list_index(corpus: Location, cfg: CorpusConfig) -> CorpusListing:
    assert cfg.index is not None  # called only when the corpus has an index
    fs, root = corpus.fs, corpus.path
    table = _read_index(corpus, cfg.index)
    digest = _digest([f"{r}" for r in table.to_pylist()])
    has_expr = "expression" in table.column_names
    rows, refused = [], []
    seen: set[str] = set()
    root_protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    for n, rec in enumerate(table.to_pylist()):
        if rec["identity"] is None or rec["path"] is None or not str(rec["identity"]).strip() \
                or not str(rec["path"]).strip():
            refused.append(dict(input_key=f"index-row-{n}", identity=rec["identity"] and str(rec["identity"]),
                                path=rec["path"] and str(rec["path"]), reason="bad_index_row",
                                detail=f"row {n} of the index lacks an identity or a path"))
            continue
        identity, rel = str(rec["identity"]), str(rec["path"])
        key = f"{identity}/{rel}"
        if key in seen:  # the same entry twice would ingest one image as two sources
            refused.append(dict(input_key=f"{key}#row-{n}", identity=identity, path=rel, reason="duplicate_entry",
                                detail=f"row {n} of the index repeats an earlier row"))
            continue
        seen.add(key)
        expr = rec.get("expression") if has_expr else None
        if "://" in rel:
            scheme = rel.split("://", 1)[0]
            if scheme not in ({root_protocol} | ({"file"} if root_protocol in ("file", "local") else set())):
                refused.append(dict(input_key=key, identity=identity, path=rel, reason="foreign_url",
                                    detail=f"scheme {scheme!r} differs from the corpus root's {root_protocol!r}"))
                continue
            rel_path = fs._strip_protocol(rel)  # same filesystem as the root (checked above)
        else:
            rel_path = rel if rel.startswith("/") else f"{root}/{rel}"
        norm = posixpath.normpath(rel_path)
        if not (norm == root or norm.startswith(root + "/")):
            refused.append(dict(input_key=key, identity=identity, path=rel, reason="path_outside_corpus",
                                detail=f"resolves to {norm!r}, outside the corpus root {root!r}"))
            continue
        rows.append(dict(input_key=key, identity=identity, expression=normalize_label(str(expr)) if expr else None,
                         path=full_url(fs, norm), raw_name=posixpath.basename(rel)))
    return CorpusListing(pa.Table.from_pylist(rows, schema=WORK_ITEM_SCHEMA), refused, digest)
