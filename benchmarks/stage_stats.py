"""Per-stage busy time from the JSON lines StageActor writes when CIEP_STAGE_STATS_DIR is set
(pipeline/ray_adapter.py). Shared by bench_orchestration.py and bench_end_to_end.py."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def _union_seconds(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def stage_report(stats_dir: Path, t0: float, t1: float) -> list[dict]:
    """For each stage seen between wall-clock t0 and t1: actors, batches, rows, busy seconds (summed over
    actors), busy share of the window (busy / (window x actors)), and how long at least one actor was busy."""
    spans: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    rows: dict[str, int] = defaultdict(int)
    batches: dict[str, int] = defaultdict(int)
    for f in Path(stats_dir).glob("*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if r["end"] < t0 or r["start"] > t1:
                continue
            spans[r["stage"]][r["pid"]].append((max(r["start"], t0), min(r["end"], t1)))
            rows[r["stage"]] += r["rows"]
            batches[r["stage"]] += 1
    window = t1 - t0
    out = []
    for stage, per_pid in spans.items():
        busy = sum(_union_seconds(s) for s in per_pid.values())
        any_busy = _union_seconds([x for s in per_pid.values() for x in s])
        out.append(dict(stage=stage, actors=len(per_pid), batches=batches[stage], rows=rows[stage],
                        busy_s=busy, busy_share=busy / (window * len(per_pid)), any_busy_share=any_busy / window))
    return out


def format_stage_report(report: list[dict], order: list[str] | None = None) -> str:
    rank = {s: i for i, s in enumerate(order or [])}
    lines = [f"{'stage':<22} {'actors':>6} {'rows':>7} {'busy s':>8} {'ms/row':>7} {'busy share':>10} "
             f"{'any actor busy':>14}"]
    for r in sorted(report, key=lambda r: rank.get(r["stage"], 99)):
        lines.append(f"{r['stage']:<22} {r['actors']:>6} {r['rows']:>7} {r['busy_s']:>8.1f} "
                     f"{1000 * r['busy_s'] / max(r['rows'], 1):>7.1f} {r['busy_share']:>10.0%} "
                     f"{r['any_busy_share']:>14.0%}")
    return "\n".join(lines)
