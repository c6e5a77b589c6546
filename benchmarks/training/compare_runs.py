"""Two training runs on the same data, side by side (e.g. fp8 projections against bf16):
the final loss (mean of the last ``--last`` steps' losses, which steadies the step-to-step
noise), the relative difference, median tokens/s, and both loss curves in one plot.

    python train.py --config tnl-385m model.projection_dtype=fp8 steps=1000 ... run_dir=$OUT/fp8
    python -m benchmarks.training.compare_runs $OUT/bf16 $OUT/fp8 --out $OUT
"""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from tnl_jax.training.metrics import read_metrics


def summary(run_dir: str, last: int) -> dict:
    """Final loss, steps and median tokens/s of the run in ``run_dir``."""
    records = [r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if "loss" in r]
    if len(records) < last:
        raise ValueError(f"{run_dir}: {len(records)} logged steps, fewer than --last={last}")
    rates = [r["tokens_per_s"] for r in records if r.get("tokens_per_s")]
    return {"run": run_dir, "steps": records[-1]["step"],
            "final_loss": statistics.fmean(r["loss"] for r in records[-last:]),
            "tokens_per_s": statistics.median(rates) if rates else None,
            "curve": [(r["step"], r["loss"]) for r in records]}


def plot(runs: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        ax.plot(*zip(*run["curve"]), label=os.path.basename(run["run"].rstrip("/")), lw=0.8)
    ax.set(xlabel="step", ylabel="training loss", yscale="log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", help="run directory of the reference (e.g. bf16)")
    parser.add_argument("other", help="run directory compared with it (e.g. fp8)")
    parser.add_argument("--last", type=int, default=50, help="steps averaged for the final loss")
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()
    ref, other = summary(args.reference, args.last), summary(args.other, args.last)
    for run in (ref, other):
        rate = "-" if run["tokens_per_s"] is None else f"{run['tokens_per_s'] / 1e3:.1f}K"
        print(f"{run['run']}: {run['steps']} steps, final loss {run['final_loss']:.4f} "
              f"(mean of the last {args.last}), {rate} tokens/s")
    change = other["final_loss"] / ref["final_loss"] - 1
    speed = (f", {other['tokens_per_s'] / ref['tokens_per_s']:.2f}x tokens/s"
             if ref["tokens_per_s"] and other["tokens_per_s"] else "")
    print(f"final loss {100 * change:+.2f}% against the reference{speed}")
    if args.out:
        plot([ref, other], os.path.join(args.out, "compare_runs.png"))


if __name__ == "__main__":
    main()
