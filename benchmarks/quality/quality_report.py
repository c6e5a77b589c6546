"""The quality study's table and plots, from the ``quality.json`` of every run under a
root: ``summary.md`` (one line per run, then means over seeds), ``summary.json``, and
``loss_vs_tokens.png``, ``loss_vs_flops.png``, ``position_buckets.png``, ``mqar.png``."""
from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from benchmarks.common.results_io import read_json
from benchmarks.quality.quality_results import BUCKETS, RESULT_FILE


def load(root: Path) -> list[dict]:
    """Every run's results under ``root`` (``quality.json``, or gzipped as archived)."""
    return [read_json(p) for p in sorted([*root.glob(f"*/{RESULT_FILE}"),
                                          *root.glob(f"*/{RESULT_FILE}.gz")])]


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def run_line(r: dict) -> str:
    held = r.get("held_out") or {}
    buckets = held.get("buckets") or {}
    cells = [r["run"], _fmt(r["params"] / 1e6, ".2f"), str(r["glu_dim"]),
             _fmt(r["flops_per_token"] / 1e6, ".1f"), _fmt(r["tokens"] / 1e6, ".1f"),
             _fmt(r.get("tokens_per_s"), ",.0f"), _fmt(held.get("bits_per_byte")),
             *[_fmt((buckets.get(b) or {}).get("bits_per_byte")) for b in BUCKETS],
             r.get("error", "")[:40]]
    return "| " + " | ".join(cells) + " |"


def seed_means(results: list[dict]) -> list[str]:
    """Held-out bits per byte, mean ± spread over seeds, per architecture and row length."""
    groups = defaultdict(list)
    for r in results:
        if "held_out" in r:
            groups[(r["seq_len"], r["arch"])].append(r["held_out"]["bits_per_byte"])
    lines = ["| rows | arch | seeds | bits/byte mean | min-max |", "|---|---|---|---|---|"]
    for (rows, arch), values in sorted(groups.items()):
        lines.append(f"| {rows} | {arch} | {len(values)} | {statistics.mean(values):.4f} | "
                     f"{min(values):.4f}-{max(values):.4f} |")
    return lines


def mqar_lines(results: list[dict]) -> list[str]:
    lines = ["| run | length | " + " | ".join(f"{p} pairs" for p in (4, 8, 16, 32, 64)) + " |",
             "|---|---|" + "---|" * 5]
    for r in results:
        by_length = defaultdict(dict)
        for point in r.get("mqar", []):
            by_length[point["length"]][point["pairs"]] = point["recall"]
        for length, row in sorted(by_length.items()):
            lines.append(f"| {r['run']} | {length} | " + " | ".join(
                _fmt(row.get(p), ".3f") for p in (4, 8, 16, 32, 64)) + " |")
    return lines


def table(results: list[dict]) -> str:
    head = ["run", "params M", "glu_dim", "MFLOP/token", "tokens M", "tokens/s",
            "held-out bits/byte", *[f"bpb {b}" for b in BUCKETS], "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [run_line(r) for r in results]
    return "\n".join([*lines, "", *seed_means(results), "", *mqar_lines(results)]) + "\n"


def write(root: Path) -> None:
    """Writes the table and plots under ``root`` and prints the table."""
    results = load(root)
    if not results:
        print(f"no {RESULT_FILE} under {root}: nothing to report")
        return
    text = table(results)
    (root / "summary.md").write_text(text)
    (root / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    print(text)
    from benchmarks.quality import quality_plots  # Only here: matplotlib is slow to import.
    for path in quality_plots.plot_all(results, root):
        print(f"plot: {path}")
