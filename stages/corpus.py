"""List a corpus into ingest work items: `<root>/<identity>/<file>` folders or a Parquet/CSV index."""

from __future__ import annotations

import io
import posixpath
import re
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.config import StorageOptions, Strict, storage_options_field
from manifests.store import full_url


class CorpusConfig(Strict):
    root: str = "data/demo_corpus"  # <root>/<identity>/<file>
    index: str | None = None  # Parquet or CSV with identity, path[, expression]; paths relative to root
    # Without an index, the expression label is the file stem minus a trailing _<digits> ("smiling_02").
    expression_from_filename: bool = True
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
    storage_options: StorageOptions = storage_options_field()


WORK_ITEM_SCHEMA = pa.schema([
    pa.field("input_key", pa.string(), nullable=False),
    pa.field("identity", pa.string(), nullable=False),
    pa.field("expression", pa.string()),
    pa.field("path", pa.string(), nullable=False),
])

_TRAILING_INDEX = re.compile(r"[_\-]\d+$")


@dataclass
class CorpusListing:
    items: pa.Table  # WORK_ITEM_SCHEMA
    refused: list[dict]  # {input_key, identity, path, reason, detail}


class CorpusError(ValueError):
    """The corpus root or index cannot be read at all."""


def _label_from_name(name: str) -> str:
    stem = posixpath.splitext(name)[0]
    return _TRAILING_INDEX.sub("", stem).lower()


def list_corpus(cfg: CorpusConfig) -> CorpusListing:
    fs, root = fsspec.core.url_to_fs(cfg.root, **cfg.storage_options)
    root = root.rstrip("/")
    if not fs.exists(root) or not fs.isdir(root):
        raise CorpusError(f"corpus root {cfg.root!r} does not exist or is not a folder")
    if cfg.index:
        return _list_index(fs, root, cfg)
    rows, refused = [], []
    exts = tuple(e.lower() for e in cfg.extensions)
    for ident_dir in sorted(fs.ls(root, detail=True), key=lambda d: d["name"]):
        if ident_dir["type"] != "directory":
            continue
        identity = posixpath.basename(ident_dir["name"].rstrip("/"))
        if identity.startswith((".", "_")):
            continue
        for entry in sorted(fs.ls(ident_dir["name"], detail=True), key=lambda d: d["name"]):
            name = posixpath.basename(entry["name"])
            if entry["type"] != "file" or name.startswith("."):
                continue
            key = f"{identity}/{name}"
            url = full_url(fs, entry["name"])
            if not name.lower().endswith(exts):
                refused.append(dict(input_key=key, identity=identity, path=url, reason="unsupported_extension",
                                    detail=f"extension not in {list(exts)}"))
                continue
            label = _label_from_name(name) if cfg.expression_from_filename else None
            rows.append(dict(input_key=key, identity=identity, expression=label, path=url))
    return CorpusListing(pa.Table.from_pylist(rows, schema=WORK_ITEM_SCHEMA), refused)


def _read_index(fs: fsspec.AbstractFileSystem, index_url: str, storage_options: dict) -> pa.Table:
    try:
        with fsspec.open(index_url, "rb", **storage_options) as fh:
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


def _list_index(fs: fsspec.AbstractFileSystem, root: str, cfg: CorpusConfig) -> CorpusListing:
    assert cfg.index is not None  # called only when the corpus has an index
    table = _read_index(fs, cfg.index, cfg.storage_options)
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
            rel_path = fsspec.core.url_to_fs(rel)[1]
        else:
            rel_path = rel if rel.startswith("/") else f"{root}/{rel}"
        norm = posixpath.normpath(rel_path)
        if not (norm == root or norm.startswith(root + "/")):
            refused.append(dict(input_key=key, identity=identity, path=rel, reason="path_outside_corpus",
                                detail=f"resolves to {norm!r}, outside the corpus root {root!r}"))
            continue
        rows.append(dict(input_key=key, identity=identity, expression=str(expr).lower() if expr else None,
                         path=full_url(fs, norm)))
    return CorpusListing(pa.Table.from_pylist(rows, schema=WORK_ITEM_SCHEMA), refused)
