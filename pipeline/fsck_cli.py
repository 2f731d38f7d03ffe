"""`ciep fsck [RUN] [--repair]` and `ciep fsck --release NAME`: check committed files against their checksums.

Exit 0 when everything matches (or --repair left nothing bad), 6 (EXIT_DAMAGED) when problems were found, 7
(EXIT_UNCHECKED) when the check could not be made (storage unreachable, the run locked by a live driver), 5 when
there is no such run or release. The checks are manifests/fsck.py (runs) and publish/release/verify.py (releases);
the repair is manifests/repair.py, under the run lock.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.location import Location
from manifests.fsck import FsckReport, check_run
from manifests.lock import RunLock
from manifests.repair import repair_run
from manifests.runs import find_run, read_run_info
from manifests.store import ManifestStore
from pipeline.exits import EXIT_DAMAGED, EXIT_OK, EXIT_UNCHECKED, EXIT_USAGE, one_line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ciep fsck", description="Check every committed file of a run against its "
                                "commit marker and every image against its manifest row (or every file of a "
                                "release against release.json). Exit 0 clean, 6 problems found, 7 could not "
                                "check, 5 no such run or release.")
    p.add_argument("run", nargs="?", help="run id (default: the most recently updated run), or a run folder")
    p.add_argument("--release", help="check this release instead (releases are never repaired: make a new one)")
    p.add_argument("--repair", action="store_true",
                   help="move bad files to <run>/quarantine/ and withdraw their commits (or the rows of a bad "
                        "image's candidate), so that rerunning the run's config redoes exactly those items")
    p.add_argument("--no-images", action="store_true", help="check the manifests only, not the images")
    p.add_argument("--config", help="config whose run.output_root is searched (default configs/demo.yaml)")
    p.add_argument("--output-root", help="folder or URL holding runs (overrides the config)")
    p.add_argument("--releases-root", help="folder or URL holding releases (default <output-root>/releases)")
    return p


def _print(report: FsckReport) -> None:
    for problem in report.problems:
        print(f"BAD {problem}")
    print(report.summary())


def _fsck_release(name: str, releases_root: Location) -> int:
    from publish.release.read import RELEASE_INFO, open_release
    from publish.release.verify import verify_release

    try:
        rel = open_release(releases_root, name)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        print(f"BAD {releases_root.sub_path(name, RELEASE_INFO)}: unreadable ({one_line(err)})")
        return EXIT_DAMAGED
    report = verify_release(rel)
    for problem in report.problems:
        print(f"BAD {rel.root}/{problem.path}: {problem.kind}"
              + (f" (expected {problem.expected}, found {problem.actual})" if problem.expected else ""))
    print(f"fsck release {rel.name}: {report.files} files ({report.bytes / 1e6:.1f} MB) re-hashed: "
          + ("OK" if report.ok else f"{len(report.problems)} problem(s)"))
    return EXIT_OK if report.ok else EXIT_DAMAGED


def _repair(run: Location, images: bool) -> int:
    with RunLock(run):  # no driver commits while commits are withdrawn
        report = check_run(run, images=images)  # again, under the lock
        _print(report)
        if report.ok:
            return EXIT_OK
        result = repair_run(ManifestStore.open(run), report)
        print(result.summary())
        after = check_run(run, images=images)
    print("after repair: " + after.summary())
    return EXIT_OK if after.ok else EXIT_DAMAGED


def _run_location(output_root: Location, run: str | None) -> Location:
    """A run id under the output root (default: the latest run), or a run folder's own path or URL."""
    if run and ("/" in run or "://" in run):
        where = output_root.at(run)
        if not read_run_info(where):
            raise FileNotFoundError(f"no run at {where.url!r} (run.json missing)")
        return where
    return find_run(output_root, run)


def run_fsck(args: argparse.Namespace, output_root: Location, releases_root: Location) -> int:
    """Run a parsed `ciep fsck` (wired in pipeline/cli.py)."""
    if args.release and (args.repair or args.run):
        print("ciep fsck: --release takes no run and no --repair (releases never change)", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.release:
            return _fsck_release(args.release, releases_root)
        run = _run_location(output_root, args.run)
        if args.repair:
            return _repair(run, not args.no_images)
        report = check_run(run, images=not args.no_images)
    except FileNotFoundError as err:
        if err.errno is None:  # no such run or release: the caller's EXIT_NOT_FOUND
            raise
        print(f"ciep fsck: could not check: {one_line(err)}", file=sys.stderr)
        return EXIT_UNCHECKED
    except Exception as err:  # noqa: BLE001 - storage unreachable, run locked, ...: the check was not made
        print(f"ciep fsck: could not check: {one_line(err)}", file=sys.stderr)
        return EXIT_UNCHECKED
    _print(report)
    if not report.ok:
        print("run `ciep fsck --repair` to take the bad files out, then rerun the run's config")
    return EXIT_OK if report.ok else EXIT_DAMAGED
