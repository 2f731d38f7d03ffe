"""`ciep release create|verify|diff|list`: immutable dataset releases of a run's accepted triples."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

from core.location import Location
from manifests.runs import find_run
from publish.release.create import FileMapper, create_release
from publish.release.diff import ReleaseDiff, diff_releases
from publish.release.read import Release, ReleaseError, ReleaseNotFoundError, list_releases, open_release
from publish.release.schema import ReleaseConfig
from publish.release.verify import verify_release


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="config whose run.output_root and release section are used "
                                    "(default configs/demo.yaml)")
    p.add_argument("--output-root", help="folder or URL holding runs (overrides the config)")
    p.add_argument("--releases-root", help="folder or URL holding releases (default <output-root>/releases)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ciep release", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="snapshot a run's accepted triples as a new, immutable release")
    c.add_argument("--run", help="run id (default: the most recently updated run)")
    c.add_argument("--rounds", type=int, nargs="+", help="rounds to include (default: all)")
    c.add_argument("--keep-audited", action="store_true",
                   help="keep triples a person labelled artificial in an audit of the run (default: left out)")
    c.add_argument("--name", required=True, help="release name, e.g. ciep-v1 (must not exist)")
    c.add_argument("--split", action="append", default=[], metavar="NAME=RATIO",
                   help="split ratio, repeatable (default: release.splits of the config)")
    c.add_argument("--license", help="licence id for the dataset card (default: release.license)")
    c.add_argument("--batch-size", type=int, default=256)
    c.add_argument("--no-verify", action="store_true", help="skip re-hashing the new release's files")
    c.add_argument("--no-fsck", action="store_true", help="skip checking the run as `ciep fsck` does first "
                   "(by default a run that fails it is refused, exit 6)")
    c.add_argument("--ray", action="store_true", help="release the run's manifest files in parallel on Ray Data "
                   "(ray.address of the config, else a local Ray)")
    c.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started for --ray (default: all)")
    _common(c)
    v = sub.add_parser("verify", help="re-hash every file of a release; exit 1 on any difference")
    v.add_argument("name")
    _common(v)
    d = sub.add_parser("diff", help="triples added/removed from release A to B, and score shifts")
    d.add_argument("a")
    d.add_argument("b")
    d.add_argument("--limit", type=int, default=20, help="added/removed triples listed (default 20)")
    _common(d)
    ls = sub.add_parser("list", help="published releases, oldest first")
    ls.add_argument("--json", action="store_true")
    _common(ls)
    return p


def _parse_splits(pairs: list[str]) -> dict[str, float] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        name, _, ratio = pair.partition("=")
        try:
            out[name] = float(ratio)
        except ValueError:
            raise ReleaseError(f"--split {pair!r} is not NAME=RATIO") from None
    return out


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:+.4f}"


def format_diff(d: ReleaseDiff, limit: int) -> str:
    lines = [f"release diff {d.a} -> {d.b}",
             f"triples: {d.count_a} -> {d.count_b}  (+{len(d.added)} added, -{len(d.removed)} removed, "
             f"{d.common} common)"]
    for label, items in (("added", d.added), ("removed", d.removed)):
        if items:
            lines.append(f"{label} ({len(items)}):")
            lines += [f"  {t['triple_id']}  round {t['round']}  {t['split']:<10} {t['identity_i']} <- "
                      f"{t['identity_j']}  {t['expression'] or ''}" for t in items[:limit]]
            if len(items) > limit:
                lines.append(f"  ... {len(items) - limit} more")
    if d.split_moves:
        lines.append(f"split moves ({len(d.split_moves)}):")
        lines += [f"  {m['triple_id']}  {m['split_a']} -> {m['split_b']}" for m in d.split_moves[:limit]]
    lines.append("score shifts on common triples (changed / mean delta / max |delta|), and distributions:")
    for s, sh in d.score_shifts.items():
        dist = d.distributions[s]
        mean = "–" if dist["mean_a"] is None or dist["mean_b"] is None else _fmt(dist["mean_b"] - dist["mean_a"])
        lines.append(f"  {s:<13} changed {sh['changed']:>5}  mean delta {_fmt(sh['mean_delta'])}  "
                     f"max |delta| {_fmt(sh['max_abs_delta'])}  |  mean {_fmt(dist['mean_a'])} -> "
                     f"{_fmt(dist['mean_b'])} ({mean}), median {_fmt(dist['median_a'])} -> "
                     f"{_fmt(dist['median_b'])}")
    return "\n".join(lines)


def _created(rel: Release) -> str:
    i = rel.info
    per_split = ", ".join(f"{k} {v['triples']}" for k, v in i["stats"]["splits"].items())
    return (f"release {rel.name}: {i['stats']['triples']} triples ({per_split}), {i['stats']['images']} images, "
            f"{i['stats']['excluded_cross_split']} cross-split triples left out, "
            f"{i['stats'].get('excluded_by_audit', 0)} labelled artificial in an audit; "
            f"{i['stats'].get('pool_image_bytes_added', 0) / 1e6:.1f} MB of new images in the shared pool\n"
            f"  -> {rel.root}")


def _print_verify(rel: Release) -> int:
    report = verify_release(rel)
    digest = hashlib.sha256(rel.read_bytes("release.json")).hexdigest()
    print(f"verify {rel.name}: re-hashed {report.files} files ({report.bytes / 1e6:.1f} MB); "
          f"release.json sha256 {digest}")
    for problem in report.problems:
        print(f"  {problem}")
    print("OK: every file matches" if report.ok else f"FAILED: {len(report.problems)} difference(s)")
    return 0 if report.ok else 1


def run_cli(args: argparse.Namespace, output_root: Location, releases_root: Location, release: ReleaseConfig,
            map_files: FileMapper | None = None) -> int:
    """Run a parsed `ciep release` command (wired in pipeline/cli.py) against these storage locations;
    `map_files` runs release tasks elsewhere (pipeline/publish_on_ray.py with --ray), else here."""
    try:
        if args.cmd == "create":
            rel = create_release(find_run(output_root, args.run), args.name, releases_root,
                                 rounds=args.rounds, splits=_parse_splits(args.split) or dict(release.splits),
                                 license=args.license or release.license, batch_size=args.batch_size,
                                 map_files=map_files, fsck=not args.no_fsck, keep_audited=args.keep_audited)
            print(_created(rel))
            if args.no_verify:
                return 0
            return _print_verify(rel)
        if args.cmd == "verify":
            return _print_verify(open_release(releases_root, args.name))
        if args.cmd == "diff":
            d = diff_releases(open_release(releases_root, args.a), open_release(releases_root, args.b))
            print(format_diff(d, args.limit))
            return 0
        releases = list_releases(releases_root)
        if args.json:
            print(json.dumps([{k: r.get(k) for k in ("name", "created_at", "license", "source", "stats")}
                              for r in releases], indent=1, default=str))
        elif not releases:
            print(f"no releases under {releases_root.url}")
        else:
            for r in releases:
                splits = ", ".join(f"{k} {v['triples']}" for k, v in r["stats"]["splits"].items())
                print(f"{r['name']:<20} {r['created_at']}  {r['stats']['triples']:>7} triples ({splits})  "
                      f"run {r['source']['run_id']} rounds {r['source']['rounds']}")
        return 0
    except (ReleaseNotFoundError, FileNotFoundError) as err:  # no such release or run: EXIT_NOT_FOUND, as for runs
        print(f"ciep release {args.cmd}: {err}", file=sys.stderr)
        return 5
    except ReleaseError as err:
        print(f"ciep release {args.cmd}: {err}", file=sys.stderr)
        return 1
