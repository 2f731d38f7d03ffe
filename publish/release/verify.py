"""Verifying a release: re-hash every file against release.json and the manifest, list every difference."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import fsspec

from manifests.scan import iter_batches
from publish.progress import progress
from publish.release.read import INFO_CHECKSUM, RELEASE_INFO, Release, file_digest, info_checksum
from publish.release.schema import IMAGE_ROLES


@dataclass(frozen=True)
class Problem:
    path: str  # relative to the release folder
    kind: str  # missing | size | sha256 | unexpected
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        detail = f": expected {self.expected}, found {self.actual}" if self.expected or self.actual else ""
        return f"{self.kind:<10} {self.path}{detail}"


@dataclass
class VerifyReport:
    name: str
    files: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check(fs: fsspec.AbstractFileSystem, root: str, rel: str, sha256: str, size: int | None,
           report: VerifyReport) -> None:
    path = posixpath.normpath(f"{root}/{rel}")
    try:
        d = file_digest(fs, path)
    except FileNotFoundError:
        report.problems.append(Problem(rel, "missing"))
        return
    report.files += 1
    report.bytes += d["bytes"]
    if size is not None and d["bytes"] != size:
        report.problems.append(Problem(rel, "size", str(size), str(d["bytes"])))
    if d["sha256"] != sha256:
        report.problems.append(Problem(rel, "sha256", sha256, d["sha256"]))


def verify_release(release: Release, batch_size: int = 1024) -> VerifyReport:
    """Re-hash every file of the release against release.json and the manifest; list every difference."""
    report = VerifyReport(release.name)
    fs, root = release.fs, release.root
    recorded = release.info.get(INFO_CHECKSUM)
    if recorded is not None and info_checksum(release.info) != recorded:
        report.problems.append(Problem(RELEASE_INFO, "sha256", recorded, info_checksum(release.info)))
    listed = release.info.get("files", {})
    for rel, d in sorted(listed.items()):
        _check(fs, root, rel, d["sha256"], d["bytes"], report)
    present_manifests = {p[len(root) + 1:] for p in fs.glob(f"{root}/manifests/**") if fs.isfile(p)}
    for rel in sorted(present_manifests - set(listed)):
        report.problems.append(Problem(rel, "unexpected"))
    if any(p.path.startswith("manifests/") for p in report.problems):
        return report  # the manifest itself is not trustworthy: its image list would be too
    expected: set[str] = set()
    cols = [f"{k}_{c}" for k in IMAGE_ROLES for c in ("file", "sha256", "bytes")]
    total = release.info.get("stats", {}).get("triples")
    with progress(total, f"verify {release.name}", "triple") as bar:
        for batch in iter_batches(release.store, "triples", columns=cols, batch_size=batch_size):
            for row in batch.to_pylist():
                for key in IMAGE_ROLES:
                    rel = row[f"{key}_file"]
                    if rel in expected:
                        continue
                    expected.add(rel)
                    _check(fs, root, rel, row[f"{key}_sha256"], row[f"{key}_bytes"], report)
            bar.update(batch.num_rows)
    for path in sorted(fs.find(f"{root}/images")):
        if path[len(root) + 1:] not in expected:
            report.problems.append(Problem(path[len(root) + 1:], "unexpected"))
    return report


