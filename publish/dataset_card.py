"""The dataset card (`README.md`) of a release: a Hugging Face YAML header and prose from release.json."""

from __future__ import annotations

import yaml

from publish.release.schema import EXPORT_COLUMNS, card_dtype

QC_RULES = [
    ("max_leak_similarity", "id_sim_rt", "<=", "identity leak: R must not look like T's identity i"),
    ("min_swap_similarity", "id_sim_rj", ">=", "swap success: R must look like the swap source j"),
    ("max_expression_distance", "expr_dist_rt", "<=", "expression kept: R's expression close to T's"),
    ("min_sharpness", "sharpness", ">=", "usable face: variance of the Laplacian on the aligned grey face"),
]


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


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "–" if v is None else str(v)


def _models_lines(lineage: dict) -> list[str]:
    lines = []
    for role, label in (("expression", "expression transfer"), ("swap", "identity swap"),
                        ("identity", "identity embedder (QC)")):
        for m in lineage["models"].get(role, []):
            lines.append(f"| {label} | `{m['id']}` | `{m['sha256']}` |")
    return lines


def render_card(info: dict) -> str:
    """Markdown dataset card; the header parses as YAML, the prose says how the data was made and its limits."""
    stats, src, lineage = info["stats"], info["source"], info["lineage"]
    header = yaml.safe_dump(card_header(info), sort_keys=False, allow_unicode=True)
    thresholds = lineage["thresholds"][0] if lineage["thresholds"] else {}
    out = [f"---\n{header}---", "", f"# CIEP release `{info['name']}`", "",
           "Cross-identity expression pairs {S, R, T} for expression-controlled portrait generation, made by "
           "CIEP Factory's ID-irrelevant Data Iteration (IDI). **T** is a portrait of identity *i* with "
           "expression *e*; **S** is identity *i* with another expression; **R** shows expression *e* on a "
           "different identity *j*. A model learns to take identity from S and expression from R and "
           "reproduce T.", "",
           f"- {stats['triples']} triples, {stats['identities']} identities, {stats['images']} distinct images "
           f"({stats['image_bytes'] / 1e6:.1f} MB)",
           f"- created {info['created_at']} by {info['created_by']}; licence `{info['license']}`",
           f"- source run `{src['run_id']}` (config fingerprint `{src['config_fingerprint']}`), "
           f"rounds {src['rounds']}, corpus `{src['corpus_root']}`", "",
           "## Splits", "", f"Rule: {info['split_rule']}.", "",
           "| split | ratio | triples | identities | images | MB |", "|---|---:|---:|---:|---:|---:|"]
    for name, ratio in info["splits"].items():
        s = stats["splits"].get(name, {})
        out.append(f"| {name} | {ratio:g} | {s.get('triples', 0)} | {s.get('identities', 0)} | "
                   f"{s.get('images', 0)} | {s.get('bytes', 0) / 1e6:.1f} |")
    out += ["", f"Triples whose two identities fell in different splits were left out: "
                f"{stats['excluded_cross_split']}.", "",
            "## How it was made", "",
            "1. **Ingest**: every corpus image is decoded, its single face detected and aligned (FFHQ-style "
            "crop); identity embedding, landmarks and an expression descriptor are recorded. Unusable images "
            "are rejected with a reason code.",
            "2. **Pairing**: for each target T (identity *i*, expression *e*) a source S of *i* in another "
            "expression and a different identity *j* are chosen with a seeded RNG.",
            "3. **Expression transfer** re-poses *j*'s face to expression *e*; **identity swap** then puts "
            "*j*'s identity onto it, giving R.",
            "4. **QC** scores R and keeps it only if every rule below holds; each decision is a manifest row.",
            "", "| stage | model | sha256 |", "|---|---|---|", *_models_lines(lineage), ""]
    if lineage.get("adapters"):
        out += ["Adapters (IDI lineage):", "", "| round | kind | adapter | sha256 | data round |",
                "|---:|---|---|---|---:|"]
        out += [f"| {a['round']} | {a['kind']} | `{a['adapter_id']}` | `{a['adapter_sha256']}` | "
                f"{a['data_round']} |" for a in lineage["adapters"]]
        out.append("")
    out += ["## QC rules", "", "| check | score | rule | threshold |", "|---|---|---|---:|"]
    for key, score, op, what in QC_RULES:
        out.append(f"| {what} | `{score}` | {op} | {_fmt(thresholds.get(key))} |")
    if thresholds.get("identity_backend"):
        out.append(f"\nIdentity similarities are cosine similarities from the `{thresholds['identity_backend']}` "
                   "backend.")
    if len(lineage["thresholds"]) > 1:
        out.append(f"\nNote: the triples were judged with {len(lineage['thresholds'])} different threshold "
                   "sets; each row carries its own `thresholds`.")
    out += ["", "## Counts", "", "| round | candidates | accepted | pass rate | rejection reasons |",
            "|---:|---:|---:|---:|---|"]
    for r in info.get("qc", []):
        reasons = ", ".join(f"{k} {v}" for k, v in r["reasons"].items() if k != "accepted") or "–"
        out.append(f"| {r['round']} | {r['candidates']} | {r['accepted']} | {r['pass_rate']:.1%} | {reasons} |")
    out += ["", "Triples per round in this release: "
            + ", ".join(f"round {k}: {v}" for k, v in stats["rounds"].items()) + ".",
            "Expressions: " + ", ".join(f"{k} {v}" for k, v in stats["expressions"].items()) + ".", "",
            "| score | min | p10 | median | mean | p90 | max |", "|---|---:|---:|---:|---:|---:|---:|"]
    for s, d in stats["scores"].items():
        out.append(f"| `{s}` | " + " | ".join(_fmt(d[k]) for k in ("min", "p10", "median", "mean", "p90", "max"))
                   + " |")
    out += ["", "## Features", "",
            "`source`, `reference`, `target` are images (PNG, the aligned crops); `text` is the caption; "
            "`target_mask` is T's face mask (convex hull of its landmarks) and `s_landmarks68`, `t_landmarks68` "
            "the 68 (x, y) landmarks of S and T in crop pixels; `s_embedding` is S's identity "
            "embedding from ingest; `id_sim_rt`, `id_sim_rj`, `expr_dist_rt`, `sharpness` are R's QC scores; "
            "`thresholds` (JSON) the rules applied; the `*_sha256` columns identify every image; model ids "
            "and hashes say what made each R.", "",
            "## Files and verification", "",
            "`manifests/triples/*.parquet` lists every triple with the relative path, size and sha256 of its "
            "three images (stored once each, content-addressed, in the releases root's shared pool "
            "`../_pool/images/<aa>/<sha256>.png`: copy it along with this folder); `release.json` holds the "
            "lineage, statistics and the sha256 of every manifest file and of this card. Check a copy with "
            f"`ciep release verify {info['name']}`; export it with `ciep export {info['name']} --format "
            "hf-parquet` (then `datasets.load_dataset(\"parquet\", data_dir=...)`), `webdataset` or "
            "`imagefolder`.", "",
            "## Known limits", "",
            "- R is synthetic: expression transfer and face swap leave artefacts QC thresholds do not catch; "
            "QC scores come from one identity model and one expression descriptor and inherit their biases.",
            "- Identity similarity thresholds were set for the embedder named above; they do not carry over "
            "to another model.",
            "- Splits are identity-closed, so a triple whose identities straddle two splits is dropped, and a "
            "split with fewer than two identities holds no triples; realised ratios differ from the "
            "configured ones on small corpora.",
            "- Diversity is bounded by the source corpus (its identities, expressions, demographics, lighting); "
            "expression labels come from the corpus (or file names) and are not re-checked.",
            "- These are faces of real people: use the data to train and evaluate generators only, never to "
            "identify anyone, and keep the source corpus's licence and credit requirements.", ""]
    return "\n".join(out)


def parse_card_header(text: str) -> dict:
    """The YAML front matter of a card (for tests and tooling)."""
    if not text.startswith("---\n"):
        raise ValueError("dataset card has no YAML header")
    end = text.index("\n---", 4)
    return yaml.safe_load(text[4:end])
