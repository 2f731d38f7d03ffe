"""Write a benchmark's section into benchmarks/RESULTS.md without touching the other sections."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, heading: str, text: str) -> None:
    """Replace the section that starts with `heading` (or append it); `text` includes the heading line."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if heading in old:
        head, rest = old.split(heading, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        old = head.rstrip() + "\n\n" + tail
    path.write_text(old.rstrip() + "\n\n" + text)
