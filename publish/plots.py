"""Matplotlib figures of the QC report, returned as base64 data URIs (SVG) so the page needs no network."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

ACCEPT_COLOR = "#2e7d32"
REJECT_COLOR = "#c62828"
THRESHOLD_COLOR = "#1f1f1f"
_PALETTE = ["#c62828", "#ef6c00", "#6a1b9a", "#1565c0", "#00838f", "#ad1457", "#4e342e", "#546e7a", "#9e9d24"]

plt.rcParams.update({"svg.fonttype": "path", "font.size": 9, "axes.spines.top": False,
                     "axes.spines.right": False, "svg.hashsalt": "ciep"})


def data_uri(fig: Figure, fmt: str = "svg") -> str:
    """Render and close a figure; returns `data:image/svg+xml;base64,...` (or png)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, bbox_inches="tight", dpi=110, metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def reasons_by_round(rounds: Sequence[int], counts: dict[str, Sequence[int]], pass_rate: Sequence[float]) -> str:
    """Stacked bars of QC outcomes per round (accepted + each rejection reason) with the pass rate on top."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(rounds))
    bottom = np.zeros(len(rounds))
    colors = iter(_PALETTE)
    for reason, values in counts.items():
        color = ACCEPT_COLOR if reason == "accepted" else next(colors, "#888888")
        ax.bar(x, values, 0.6, bottom=bottom, label=reason, color=color)
        bottom += np.asarray(values, dtype=float)
    for xi, total, rate in zip(x, bottom, pass_rate, strict=False):
        ax.text(float(xi), float(total), f"{rate:.0%} pass", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"round {r}" for r in rounds])
    ax.set_ylabel("candidates")
    ax.set_ylim(0, max(bottom.max() if len(bottom) else 1, 1) * 1.18)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    ax.set_title("QC outcome per round")
    return data_uri(fig)


def score_histogram(title: str, accepted: np.ndarray, rejected: np.ndarray | None,
                    thresholds: Sequence[tuple[str, float]], rule: str, log_x: bool = False,
                    off_note: str | None = None) -> str:
    """Histogram of one QC score, accepted and rejected stacked, each threshold as a vertical line (several for a
    per-class threshold, labelled with the class); `off_note` is written on the plot when the check had none."""
    fig, ax = plt.subplots(figsize=(4.6, 2.9))
    parts = [v for v in (accepted, rejected) if v is not None and len(v)]
    values = np.concatenate(parts) if parts else np.array([0.0])
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    for _, t in thresholds:
        lo, hi = min(lo, t), max(hi, t)
    if log_x:
        lo = max(lo, 1e-3)
        bins = np.geomspace(lo, max(hi, lo * 1.01), 25)
        ax.set_xscale("log")
    else:
        pad = (hi - lo) * 0.05 or 0.01
        bins = np.linspace(lo - pad, hi + pad, 25)
    data, colors, labels = [accepted], [ACCEPT_COLOR], [f"accepted ({len(accepted)})"]
    if rejected is not None:
        data.append(rejected)
        colors.append(REJECT_COLOR)
        labels.append(f"rejected ({len(rejected)})")
    ax.hist(data, bins=bins.tolist(), stacked=True, color=colors, label=labels)
    top = ax.get_ylim()[1]
    for k, (label, t) in enumerate(thresholds):
        ax.axvline(t, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.2)
        left_half = (np.log(t / bins[0]) / np.log(bins[-1] / bins[0]) if log_x
                     else (t - bins[0]) / (bins[-1] - bins[0])) < 0.5
        text = f"{label} {rule} {t:g}".strip() if len(thresholds) > 1 else f"{rule} {t:g}"
        ax.text(t, top * (1.02 - 0.09 * k), text, ha="left" if left_half else "right", va="bottom", fontsize=7)
    if off_note:
        ax.text(0.5, 0.97, f"threshold {off_note}", transform=ax.transAxes, ha="center", va="top", fontsize=7,
                color="#8a5a00", wrap=True)
    ax.set_title(title, pad=14)
    ax.set_ylabel("count")
    ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    return data_uri(fig)


def horizontal_counts(title: str, labels: Sequence[str], values: Sequence[int]) -> str:
    """Horizontal bars, largest first (rejects by stage and reason)."""
    fig, ax = plt.subplots(figsize=(6, 0.35 * max(len(labels), 2) + 0.8))
    y = np.arange(len(labels))
    ax.barh(y, values, color=REJECT_COLOR)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    for yi, v in zip(y, values, strict=False):
        ax.text(float(v), float(yi), f" {v}", va="center", fontsize=8)
    ax.set_xlabel("items")
    ax.set_title(title)
    return data_uri(fig)


def round_trends(rounds: Sequence[int], series: dict[str, Sequence[float | None]]) -> str:
    """One small panel per series (pass rate, median scores of accepted R) across rounds."""
    n = len(series)
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.4), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items(), strict=False):
        ys = [np.nan if v is None else v for v in values]
        ax.plot(rounds, ys, marker="o", color="#1565c0")
        ax.set_title(name, fontsize=8)
        ax.set_xticks(list(rounds))
        ax.set_xlabel("round", fontsize=8)
    fig.tight_layout()
    return data_uri(fig)
