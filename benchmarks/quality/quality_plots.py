"""The quality study's plots: loss against tokens and against FLOPs (one line per
architecture and row length, seeds averaged), bits per byte by position bucket, MQAR
recall against pairs at each length."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.quality.quality_results import BUCKETS  # noqa: E402


def _mean_curves(results: list[dict], x: str) -> dict[tuple, tuple[list, list]]:
    """(arch, rows) -> (x values, held-out loss averaged over the seeds at each step)."""
    points = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r["task"] == "lm":
            for p in r["curve"]:
                points[(r["arch"], r["seq_len"])][p[x]].append(p["eval_loss"])
    return {key: (sorted(by_x), [statistics.mean(by_x[v]) for v in sorted(by_x)])
            for key, by_x in points.items()}


def _save(fig, ax, path: Path) -> Path:
    """Legend, grid, the file; the figure closed."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # Beside, not over.
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(results: list[dict], x: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (arch, rows), (xs, ys) in sorted(_mean_curves(results, x).items()):
        ax.plot(xs, ys, label=f"{arch} ({rows}-token rows)",
                linestyle="-" if rows == max(r["seq_len"] for r in results) else "--")
    ax.set_xlabel("training tokens" if x == "tokens" else "training FLOPs")
    ax.set_ylabel("held-out loss (nats/byte)")
    ax.set_xscale("log")
    return _save(fig, ax, path)


def plot_buckets(results: list[dict], path: Path) -> Path:
    groups = defaultdict(lambda: defaultdict(list))
    for r in results:
        for i, name in enumerate(BUCKETS):
            bucket = (r.get("held_out") or {}).get("buckets", {}).get(name)
            if bucket:
                groups[(r["arch"], r["seq_len"])][i].append(bucket["bits_per_byte"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (arch, rows), by_bucket in sorted(groups.items()):
        xs = sorted(by_bucket)
        ax.plot(xs, [statistics.mean(by_bucket[i]) for i in xs], marker="o",
                label=f"{arch} ({rows}-token rows)")
    ax.set_xticks(range(len(BUCKETS)), BUCKETS)
    ax.set_xlabel("position inside the document (tokens)")
    ax.set_ylabel("held-out bits/byte")
    return _save(fig, ax, path)


def plot_mqar(results: list[dict], path: Path) -> Path | None:
    mqar = [r for r in results if r.get("mqar")]
    if not mqar:
        return None
    lengths = sorted({p["length"] for r in mqar for p in r["mqar"]})
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.2 * len(lengths), 3.4), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        for r in mqar:
            points = sorted((p["pairs"], p["recall"]) for p in r["mqar"] if p["length"] == length)
            ax.plot(*zip(*points), marker="o", label=r["arch"])
        ax.set_title(f"length {length}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("key-value pairs")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("MQAR recall")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(results: list[dict], root: Path) -> list[Path]:
    made = [plot_curves(results, "tokens", root / "loss_vs_tokens.png"),
            plot_curves(results, "flops", root / "loss_vs_flops.png"),
            plot_buckets(results, root / "position_buckets.png"),
            plot_mqar(results, root / "mqar.png")]
    return [p for p in made if p is not None]
