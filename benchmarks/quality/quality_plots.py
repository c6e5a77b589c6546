"""The quality study's plots: held-out loss against tokens and against FLOPs (main
runs, seeds averaged), test bits per byte against the context window (length
extrapolation), passkey accuracy by length, MQAR recall per setting."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.quality.quality_results import bpb, current_passkey, window  # noqa: E402
from benchmarks.quality.quality_runs import Scale  # noqa: E402


def _save(fig, ax, path: Path) -> Path:
    """Legend beside the axes (not over the lines), grid, the file; the figure closed."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _by_arch(results: list[dict], phase: str) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for r in results:
        if r["phase"] == phase and "error" not in r:
            groups[r["arch"]].append(r)
    return groups


def plot_curves(results: list[dict], x: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arch, runs_ in sorted(_by_arch(results, "main").items()):
        points = defaultdict(list)
        for r in runs_:
            for p in r["curve"]:
                points[p[x]].append(p["eval_loss"] / math.log(2))
        xs = sorted(points)
        ax.plot(xs, [statistics.mean(points[v]) for v in xs], label=f"{arch} ({len(runs_)} seeds)")
    ax.set_xlabel("training tokens" if x == "tokens" else "training FLOPs")
    ax.set_ylabel("held-out bits/byte (whole held-out set)")
    ax.set_xscale("log")
    return _save(fig, ax, path)


def plot_extrapolation(results: list[dict], scale: Scale, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arch, runs_ in sorted(_by_arch(results, "main").items()):
        ys = [np.nanmean([bpb(window(r, s)) for r in runs_]) for s in scale.windows]
        ax.plot(scale.windows, ys, marker="o", label=arch)
    ax.axvline(scale.rows, color="grey", linestyle=":", label=f"training rows ({scale.rows})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context window at evaluation (tokens)")
    ax.set_ylabel("test bits/byte")
    return _save(fig, ax, path)


def plot_passkey(results: list[dict], path: Path) -> Path | None:
    with_key = [(r, current_passkey(r)) for r in results if current_passkey(r)]
    if not with_key:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r, cells in with_key:
        lengths = sorted({p["length"] for p in cells})
        ys = [np.mean([p["accuracy"] for p in cells if p["length"] == n]) for n in lengths]
        ax.plot(lengths, ys, marker="o", label=r["run"])
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("example length (tokens)")
    ax.set_ylabel("passkey accuracy (depths averaged)")
    return _save(fig, ax, path)


def plot_mqar(results: list[dict], path: Path) -> Path | None:
    mqar = [r for r in results if r.get("mqar")]
    if not mqar:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in mqar:
        points = r["mqar"]["in_distribution"] + r["mqar"]["extrapolation"]
        ax.plot(range(len(points)), [p["recall"] for p in points], marker="o", label=r["run"])
    labels = [f"{p['length']}/{p['pairs']}" for p in points]
    ax.axvline(len(mqar[0]["mqar"]["in_distribution"]) - 0.5, color="grey", linestyle=":")
    ax.set_xticks(range(len(labels)), labels, rotation=45)
    ax.set_xlabel("length / pairs (right of the line: past the training lengths)")
    ax.set_ylabel("MQAR recall")
    ax.set_ylim(-0.02, 1.02)
    return _save(fig, ax, path)


def plot_all(results: list[dict], scale: Scale, root: Path) -> list[Path]:
    made = [plot_curves(results, "tokens", root / "loss_vs_tokens.png"),
            plot_curves(results, "flops", root / "loss_vs_flops.png"),
            plot_extrapolation(results, scale, root / "extrapolation.png"),
            plot_passkey(results, root / "passkey.png"),
            plot_mqar(results, root / "mqar.png")]
    return [p for p in made if p is not None]
