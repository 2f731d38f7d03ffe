"""The dataset card (`README.md`) of a release: a Hugging Face YAML header and prose from release.json.

The prose is a Jinja2 Markdown template (publish/templates/dataset_card.md.j2) whose every value is Markdown- and
HTML-escaped (publish/templates.py), so identity names, labels, run and release names show as text on a model
hub that renders card Markdown with HTML. The QC rules are every deciding check with its threshold."""

from __future__ import annotations

import yaml

from manifests.schemas import TRIPLE_SCORES
from publish.audit_view import COLUMNS as AUDIT_COLUMNS
from publish.audit_view import audit_table
from publish.decision_view import check_views
from publish.release.schema import EXPORT_COLUMNS, card_dtype
from publish.selftest_view import selftest_view
from publish.templates import markdown_env


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "n>10M"


def card_header(info: dict) -> dict:
    """The YAML front matter: licence, splits (as hf-parquet export data files), features."""
    stats = info["stats"]
    splits = [s for s in info["splits"] if stats["splits"].get(s, {}).get("triples", 0) > 0]
    return {
        "license": info["license"],
        "pretty_name": f"CIEP {info['name']}",
        "task_categories": ["image-to-image"],
        "tags": ["faces", "facial-expression", "cross-identity", "synthetic", "ciep"],
        "size_categories": [_size_category(stats["triples"])],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]}],
        "dataset_info": {
            "features": [{"name": n, "dtype": card_dtype(k)} for n, k in EXPORT_COLUMNS],
            "splits": [{"name": s, "num_examples": stats["splits"][s]["triples"],
                        "num_bytes": stats["splits"][s]["bytes"]} for s in splits],
            "dataset_size": stats["image_bytes"],
        },
    }


def _models(lineage: dict) -> list[tuple[str, dict]]:
    return [(label, m) for role, label in (("expression", "expression transfer"), ("swap", "identity swap"),
                                           ("identity", "identity embedder (QC)"))
            for m in lineage["models"].get(role, [])]


def render_card(info: dict) -> str:
    """Markdown dataset card; the header parses as YAML, the prose says how the data was made and its limits."""
    lineage = info["lineage"]
    header = yaml.safe_dump(card_header(info), sort_keys=False, allow_unicode=True)
    thresholds = lineage["thresholds"][0] if lineage["thresholds"] else {}
    qc = [dict(r, reasons_text=", ".join(f"{k} {v}" for k, v in r["reasons"].items() if k != "accepted") or "–")
          for r in info.get("qc", [])]
    body = markdown_env().get_template("dataset_card.md.j2").render(
        info=info, stats=info["stats"], src=info["source"], models=_models(lineage),
        adapters=lineage.get("adapters") or [], checks=check_views(thresholds), thresholds=thresholds,
        n_threshold_sets=len(lineage["thresholds"]), selftest=selftest_view(info.get("selftest")), qc=qc,
        audit=audit_table(info.get("audit")), audit_columns=AUDIT_COLUMNS,
        score_list=", ".join(f"`{s}`" for s in TRIPLE_SCORES))
    return f"---\n{header}---\n\n{body}"


def parse_card_header(text: str) -> dict:
    """The YAML front matter of a card (for tests and tooling)."""
    if not text.startswith("---\n"):
        raise ValueError("dataset card has no YAML header")
    end = text.index("\n---", 4)
    return yaml.safe_load(text[4:end])
