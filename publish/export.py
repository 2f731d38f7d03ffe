"""`ciep export <release> --format hf-parquet|webdataset|imagefolder`: a release in trainers' formats.

The export is planned as numbered shards per split (publish/writers.py: one writer class per format).
Shards are written here one after another, or in parallel on Ray Data (`--ray`, pipeline/publish_on_ray.py);
each shard's done-marker makes a killed export resumable: run the same command again and only the missing
shards are written, giving the same output. Memory is bounded by one shard's rows and one batch of images.

- hf-parquet:  <out>/data/<split>-<nnnnn>.parquet with images embedded as `datasets` Image structs (the
               `huggingface` schema metadata carries the features) and <out>/README.md, the release's card,
               whose `configs` name the data files: `datasets.load_dataset("<out>")` or
               `load_dataset("parquet", data_files={"train": "<out>/data/train-*.parquet"})`.
- webdataset:  <out>/<split>/<split>-<nnnnnn>.tar with {key}.source.jpg, .reference.jpg, .target.jpg,
               .target_mask.png, .json; at least 2 shards per split so `DataLoader(num_workers=2)` works
               (use --min-shards N for N workers).
- imagefolder: <out>/<split>/{target,source,reference,target_mask}/<key>.png, <out>/<split>/metadata.jsonl
               (diffusers / `load_dataset("imagefolder")`: `file_name` is the target, `source_file_name`,
               `reference_file_name`, `target_mask_file_name`, `text`) and <out>/<split>/ip_adapter.json, the
               IP-Adapter tutorial's JSON list ({"image_file", "text", ...}).

Every format carries the same row (publish/release/schema.py EXPORT_COLUMNS): the caption `text`, T's face mask
`target_mask` (convex hull of its landmarks) and the S and T 68-point landmarks (`s_landmarks68`,
`t_landmarks68`, aligned-crop pixels), besides scores, seeds and model ids and hashes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from core.location import Location
from manifests.store import atomic_write_bytes
from publish.progress import progress
from publish.release.read import Release, ReleaseError, open_release, open_release_url
from publish.writers import (
    FORMATS,
    STATE_DIR,
    WRITERS,
    ShardResult,
    ShardSpec,
    Writer,
    caption,
    plan_shards,
    to_jpeg,
)

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "ExportStats", "caption", "export_release", "to_jpeg"]

PLAN_FILE = f"{STATE_DIR}/export.json"  # what is being exported (resume only the same thing)
DONE_FILE = f"{STATE_DIR}/done.json"  # written last: the export is complete


@dataclass
class ExportStats:
    format: str
    out: str
    triples: int = 0
    images: int = 0
    bytes_written: int = 0
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    shards: int = 0
    shards_skipped: int = 0  # done by an earlier, interrupted export of the same thing

    @property
    def triples_per_s(self) -> float:
        return self.triples / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / 1e6 / self.seconds if self.seconds else 0.0


# How shards are run: (writer, release, shards) -> their results, in any order. The default writes them here
# one after another; pipeline/publish_on_ray.py writes them as parallel Ray Data tasks.
ShardMapper = Callable[[Writer, Release, list[ShardSpec]], Iterable[ShardResult]]


def map_shards_here(writer: Writer, release: Release, specs: list[ShardSpec]) -> Iterator[ShardResult]:
    for spec in specs:
        yield writer.run_shard(release, spec)


def make_writer(fmt: str, out: Location, **options: int) -> Writer:
    if fmt not in WRITERS:
        raise ReleaseError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    return WRITERS[fmt](out, **options)


def _plan_record(release: Release, writer: Writer, max_shard_rows: int, min_shards: int) -> dict:
    files = release.info.get("files", {})
    return dict(release=release.name, release_created_at=release.info.get("created_at"),
                release_card_sha256=files.get("README.md", {}).get("sha256"), format=writer.format,
                max_shard_rows=max_shard_rows, min_shards=min_shards,
                options={k: v for k, v in sorted(writer.options.items()) if k != "batch_size"})


def _prepare(writer: Writer, plan: dict, out: str, overwrite: bool) -> None:
    """Refuse a non-empty destination, unless it holds an unfinished export of exactly this (then resume)."""
    fs, root = writer.fs, writer.root
    if not (fs.exists(root) and fs.ls(root)):
        atomic_write_bytes(fs, f"{root}/{PLAN_FILE}", json.dumps(plan, sort_keys=True).encode())
        return
    if overwrite:
        fs.rm(root, recursive=True)
        atomic_write_bytes(fs, f"{root}/{PLAN_FILE}", json.dumps(plan, sort_keys=True).encode())
        return
    try:
        prior = json.loads(fs.cat_file(f"{root}/{PLAN_FILE}"))
    except FileNotFoundError:
        raise ReleaseError(f"{out} exists and is not empty; pass --overwrite or choose another --out") from None
    if fs.exists(f"{root}/{DONE_FILE}"):
        raise ReleaseError(f"{out} holds a finished export; pass --overwrite or choose another --out")
    if prior != plan:
        raise ReleaseError(f"{out} holds an unfinished export of something else ({prior.get('release')} as "
                           f"{prior.get('format')}, other options); pass --overwrite or choose another --out")
    log.info("resuming the unfinished export in %s", out)


def export_release(release: Release, fmt: str, out: Location | str, *, overwrite: bool = False,
                   max_shard_rows: int | None = None,
                   min_shards: int | None = None, map_shards: ShardMapper | None = None,
                   **options: int) -> ExportStats:
    """Write `release` as `fmt` under `out` (empty, absent, or an unfinished export of the same to resume)."""
    target = Location.of(out)
    writer = make_writer(fmt, target, **options)
    rows = int(max_shard_rows or writer.default_shard_rows)
    least = int(writer.min_shards if min_shards is None else min_shards)
    _prepare(writer, _plan_record(release, writer, rows, least), target.url, overwrite)
    started = time.perf_counter()
    specs = plan_shards(release, rows, least)
    stats = ExportStats(fmt, target.url, shards=len(specs))
    results: list[ShardResult] = []
    with progress(sum(s.rows for s in specs), f"export {release.name} {fmt}", "triple") as bar:
        for res in (map_shards or map_shards_here)(writer, release, specs):
            results.append(res)
            bar.update(res.triples)
    order = {(s.split, s.index): k for k, s in enumerate(specs)}
    results.sort(key=lambda r: order[(r.split, r.index)])
    extra = writer.finish(release, results)
    for res in results:
        stats.triples += res.triples
        stats.images += res.images
        stats.bytes_written += res.bytes_written
        stats.files += [f"{writer.root}/{f}" for f in res.files]
        stats.shards_skipped += res.skipped
    stats.files += [f"{writer.root}/{f}" for f in extra]
    stats.bytes_written += sum(int(writer.fs.size(f"{writer.root}/{f}")) for f in extra)
    done = dict(triples=stats.triples, images=stats.images, shards=len(specs),
                files=[f[len(writer.root) + 1:] for f in stats.files])
    atomic_write_bytes(writer.fs, f"{writer.root}/{DONE_FILE}", json.dumps(done, sort_keys=True).encode())
    stats.seconds = time.perf_counter() - started
    return stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ciep export", description=__doc__.splitlines()[0])
    p.add_argument("release", help="release name (under --releases-root) or a release folder/URL")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", help="output folder or URL (default <output-root>/exports/<release>/<format>)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--batch-size", type=int, default=64, help="triples per row group / image batch")
    p.add_argument("--shard-rows", type=int, help="most triples per output shard (default 1000)")
    p.add_argument("--min-shards", type=int,
                   help="least shards per split (webdataset default 2: one per DataLoader worker)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="webdataset JPEG quality")
    p.add_argument("--ray", action="store_true",
                   help="write shards in parallel on Ray Data (ray.address of the config, else a local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started for --ray (default: all)")
    p.add_argument("--config", help="config whose run.output_root is used (default configs/demo.yaml)")
    p.add_argument("--output-root", help="folder or URL holding runs (overrides the config)")
    p.add_argument("--releases-root", help="folder or URL holding releases (default <output-root>/releases)")
    return p


def resolve_release(name_or_url: str, releases_root: Location | str) -> Release:
    """A release by name under releases_root, or by its own folder/URL (reached with releases_root's options)."""
    root = Location.of(releases_root)
    if "/" in name_or_url or "://" in name_or_url:
        return open_release_url(root.at(name_or_url))
    return open_release(root, name_or_url)


def run_cli(args: argparse.Namespace, output_root: Location, releases_root: Location,
            map_shards: ShardMapper | None = None) -> int:
    """Run a parsed `ciep export` (wired in pipeline/cli.py) against these storage locations; `map_shards`
    writes shards elsewhere (pipeline/publish_on_ray.py with --ray), else here."""
    options: dict[str, int] = {"batch_size": args.batch_size}
    if args.format == "webdataset":
        options["jpeg_quality"] = args.jpeg_quality
    try:
        release = resolve_release(args.release, releases_root)
        out = output_root.at(args.out) if args.out else \
            output_root.join("exports", release.name, args.format)
        stats = export_release(release, args.format, out, overwrite=args.overwrite, max_shard_rows=args.shard_rows,
                               min_shards=args.min_shards, map_shards=map_shards, **options)
    except FileNotFoundError as err:  # ReleaseNotFoundError: no such release, same status as a missing run
        print(f"ciep export: {err}", file=sys.stderr)
        return 5
    except ReleaseError as err:
        print(f"ciep export: {err}", file=sys.stderr)
        return 1
    resumed = f", {stats.shards_skipped} of {stats.shards} shards done before" if stats.shards_skipped else ""
    print(f"exported {release.name} as {stats.format}: {stats.triples} triples, {len(stats.files)} files{resumed}, "
          f"{stats.bytes_written / 1e6:.1f} MB in {stats.seconds:.1f}s ({stats.triples_per_s:.1f} triples/s, "
          f"{stats.mb_per_s:.1f} MB/s)\n  -> {out.url}")
    return 0

