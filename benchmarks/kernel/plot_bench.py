"""Plots and a Markdown table from kernel_bench.py's JSON files.

    python -m benchmarks.kernel.plot_bench benchmarks/results/kernel_bench_*.json.gz --out DIR

Reads plain or gzipped JSON. Writes ``time_vs_T.png`` (fwd+bwd time at fixed tokens) and
``speedup_and_floor.png`` (the speedup over FLA and fwd+bwd time over the memory
floor), and prints the table.
"""
from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common.results_io import read_json  # noqa: E402
from benchmarks.kernel.kernel_bench import IMPL_ORDER, floor_ms, results_table  # noqa: E402


def load(paths: list[str]) -> tuple[list[dict], float, int]:
    """Rows of every file; a row of a later file replaces the same measurement (impl,
    head sizes, B × T) of an earlier one, so that a re-run supersedes."""
    rows, copy_rates, heads = {}, [], 16
    for path in paths:
        data = read_json(path)
        rows.update({(r["impl"], r["dk"], r["dv"], r["B"], r["T"]): r
                     for r in data["rows"] if "fwd_ms" in r})
        copy_rates.append(data["copy_TBps"])
        heads = data["heads"]
    return list(rows.values()), max(copy_rates), heads


def series(rows, impl, dk, dv, key):
    points = sorted((r["T"], r[key]) for r in rows
                    if r["impl"] == impl and r["dk"] == dk and r["dv"] == dv and key in r)
    return [p[0] for p in points], [p[1] for p in points]


def plot_all(rows, copy_tbps, heads, out):
    dims = sorted({(r["dk"], r["dv"]) for r in rows})
    fig, axes = plt.subplots(1, len(dims), figsize=(3.2 * len(dims), 2.8), squeeze=False)
    colors = dict(zip(IMPL_ORDER, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, (dk, dv) in zip(axes[0], dims):
        for impl in IMPL_ORDER:
            t, ms = series(rows, impl, dk, dv, "fwdbwd_ms")
            if t:  # one color per impl in every panel
                ax.plot(t, ms, marker="o", label=impl, lw=1, color=colors[impl])
        ax.set(xscale="log", yscale="log", title=f"dk {dk} / dv {dv}", xlabel="T (B·T = 128K)")
    axes[0][0].set_ylabel("fwd+bwd ms")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "time_vs_T.png"), dpi=80)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7, 2.8))
    for dk, dv in dims:
        t, ours = series(rows, "ours_pallas", dk, dv, "fwdbwd_ms")
        _, fla = series(rows, "fla_chunk_simple_gla", dk, dv, "fwdbwd_ms")
        if len(fla) == len(ours):
            ax1.plot(t, [f / o for f, o in zip(fla, ours)], marker="o", label=f"{dk}/{dv}")
        floors = [floor_ms({"B": 131072 // s, "T": s, "dk": dk, "dv": dv, "heads": heads},
                           copy_tbps, True) for s in t]
        ax2.plot(t, [o / f for o, f in zip(ours, floors)], marker="o", label=f"{dk}/{dv}")
    ax1.axhline(1 / 0.45, ls="--", c="gray", lw=0.8)
    ax1.set(xscale="log", title="speedup over FLA, fwd+bwd", xlabel="T")
    ax2.axhline(2, ls="--", c="gray", lw=0.8)
    ax2.set(xscale="log", title="ours fwd+bwd / memory floor", xlabel="T")
    ax1.legend(fontsize=6)
    ax2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "speedup_and_floor.png"), dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows, copy_tbps, heads = load(args.paths)
    plot_all(rows, copy_tbps, heads, args.out)
    print(f"copy bandwidth {copy_tbps:.2f} TB/s")
    print(results_table(rows, copy_tbps, heads))


if __name__ == "__main__":
    main()
