"""The quality study's tables and plots from the ``quality.json`` of every run under a
root: ``summary.md`` and ``summary.json`` (the tables' numbers), and the plots of
``quality_plots``. Every held-out figure is from the **test** half of the held-out
documents, except the sweep's (the **validation** half, which chose the rates) and the
curves (the whole held-out set, the same batches at every point)."""
from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common.results_io import read_json
from benchmarks.quality.quality_figures import BASELINE, PASSKEY_LENGTH, figure_lines, figures
from benchmarks.quality.quality_results import RESULT_FILE, bpb, current_passkey, read, window
from benchmarks.quality.quality_runs import ARCHS, LABELS, Scale, plan
from tnl_jax.evaluation import bootstrap, documents
from tnl_jax.evaluation.positions import bucket_names


def load(root: Path) -> list[dict]:
    """Every run's results under ``root`` (``quality.json``, or gzipped as archived)."""
    return [read_json(p) for p in sorted([*root.glob(f"*/{RESULT_FILE}"),
                                          *root.glob(f"*/{RESULT_FILE}.gz")])]


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def validation_bpb(result: dict) -> float:
    """A sweep run's figure of merit: validation bits per byte at its row length."""
    return bpb(window(result, result["seq_len"], validation=True))


def sweep_scores(scale: Scale, root: Path, arch: str) -> dict[float, float]:
    """Validation bits per byte of every finished sweep run of ``arch`` (the grid and
    any extension), by rate; a failed or diverged run scores +inf."""
    scores = {}
    for path in sorted(root.glob(f"sweep-{arch}-lr*-s0")):
        result = read(path)
        if result is not None:
            score = validation_bpb(result) if "windows" in result else math.inf
            scores[result["lr"]] = score if math.isfinite(score) else math.inf
    return scores


def sweep_choice(scale: Scale, root: Path, arch: str) -> tuple[float | None, float | None]:
    """(the kept rate, or None while the sweep is incomplete; the rate still to run, if
    any). The grid ``scale.lrs`` runs first; a best rate at either end of what was run
    extends the grid by a factor of two that way (an optimum at the edge of a grid is
    not an optimum), until the best rate is inside."""
    scores = sweep_scores(scale, root, arch)
    missing = [lr for lr in scale.lrs if lr not in scores]
    if missing:
        return None, missing[0]
    finite = {lr: v for lr, v in scores.items() if math.isfinite(v)}
    if not finite:
        return None, None  # Every rate failed: nothing to keep, nothing obvious to try.
    best = min(finite, key=finite.get)
    if best == max(scores):
        return None, best * 2
    if best == min(scores):
        return None, best / 2
    return best, None


def chosen_lrs(scale: Scale, root: Path) -> dict[str, float]:
    """Per architecture whose sweep is complete: the rate with the lowest validation
    bits per byte, inside the rates tried (``sweep_choice``)."""
    chosen = {arch: sweep_choice(scale, root, arch)[0] for arch in scale.archs}
    return {arch: lr for arch, lr in chosen.items() if lr is not None}


def sweep_lines(results: list[dict], chosen: dict[str, float]) -> list[str]:
    sweep = [r for r in results if r["phase"] == "sweep"]
    lrs = sorted({r["lr"] for r in sweep})
    lines = ["| arch | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | kept |",
             "|---|" + "---|" * (len(lrs) + 1)]
    by = {(r["arch"], r["lr"]): r for r in sweep}
    for arch in [a for a in ARCHS if any(r["arch"] == a for r in sweep)]:
        cells = [_fmt(validation_bpb(by[(arch, lr)]) if (arch, lr) in by and
                      "error" not in by[(arch, lr)] else None) for lr in lrs]
        lines.append(f"| {arch} | " + " | ".join(cells) + f" | {_fmt(chosen.get(arch), 'g')} |")
    return lines


def _seed_losses(runs_: list[dict], size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(seeds, documents)`` test-half summed losses at ``size`` and the counts."""
    scores = [window(r, size) for r in sorted(runs_, key=lambda r: r["seed"])]
    if not scores or any(s is None for s in scores):
        return None
    return np.stack([s.loss.sum(1) for s in scores]), scores[0].count.sum(1)


def _paired_to_baseline(runs_: list[dict], base_runs: list[dict], rows: int) -> dict | None:
    """The paired difference over the seeds both sides have (a seed shares its data
    order across architectures), so an architecture with fewer seeds is still paired."""
    seeds = sorted({r["seed"] for r in runs_} & {r["seed"] for r in base_runs})
    own = _seed_losses([r for r in runs_ if r["seed"] in seeds], rows)
    base = _seed_losses([r for r in base_runs if r["seed"] in seeds], rows)
    if own is None or base is None:
        return None
    return bootstrap.paired_difference(own[0], base[0], own[1]) | {"seed_list": seeds}


def _versus_text(pair: dict | None) -> str:
    if pair is None:
        return "-"
    low, high = pair["relative_interval"]
    seeds = ",".join(str(s) for s in pair["seed_list"])
    return f"{pair['relative']:+.2%} ({low:+.2%} to {high:+.2%}; seeds {seeds})"


def main_lines(results: list[dict], rows: int) -> tuple[list[str], dict]:
    """Test bits per byte per architecture (mean, spread over seeds) and the paired
    difference to ``BASELINE`` with its bootstrap interval over documents and seeds."""
    groups = defaultdict(list)
    for r in results:
        if r["phase"] == "main" and "windows" in r:
            groups[r["arch"]].append(r)
    base_runs = groups.get(BASELINE, [])
    lines = [f"| arch | what it is | seeds | test bits/byte (mean ± sd) | vs {BASELINE} (95% CI) "
             "| all held-out, last curve point | tokens/s | MFU |", "|---|---|---|---|---|---|---|---|"]
    numbers = {}
    for arch in [a for a in ARCHS if a in groups]:
        runs_ = groups[arch]
        spread = bootstrap.seed_spread([bpb(window(r, rows)) for r in runs_])
        pair = _paired_to_baseline(runs_, base_runs, rows)
        curve = [r["curve"][-1]["eval_loss"] / math.log(2) for r in runs_ if r["curve"]]
        numbers[arch] = {"test": spread, f"vs_{BASELINE}": pair}
        vs = "baseline" if arch == BASELINE else _versus_text(pair)
        lines.append(f"| {arch} | {LABELS[arch]} | {spread['n']} | {spread['mean']:.4f} ± "
                     f"{spread['std']:.4f} | {vs} | {_fmt(np.mean(curve) if curve else None)} | "
                     f"{_fmt(np.mean([r['tokens_per_s'] or 0 for r in runs_]), ',.0f')} | "
                     f"{_fmt(np.mean([r['mfu'] or 0 for r in runs_]), '.1%')} |")
    return lines, numbers


def extrapolation_lines(results: list[dict], sizes: tuple[int, ...], rows: int,
                        phase: str = "main") -> list[str]:
    """Runs of ``phase`` (trained at ``rows``: main runs at 2K, the extensions at 16K):
    test bits per byte at each window, and the longest window against ``rows`` (seeds
    averaged)."""
    lines = ["| arch | " + " | ".join(f"{s}" for s in sizes) + f" | {sizes[-1]} / {rows} |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for arch in ARCHS:
        runs_ = [r for r in results if r["phase"] == phase and r["arch"] == arch]
        if not runs_:
            continue
        values = [np.nanmean([bpb(window(r, s)) for r in runs_]) for s in sizes]
        ratio = values[-1] / values[sizes.index(rows)] - 1 if rows in sizes else math.nan
        lines.append(f"| {arch} | " + " | ".join(_fmt(v) for v in values) +
                     f" | {_fmt(ratio, '+.2%')} |")
    return lines


def context_gain_lines(results: list[dict], short: int, full: int) -> list[str]:
    """Bits per byte lost when the context is cut to ``short`` tokens, by position bucket
    (test half, same targets): main seed 0 and ext runs."""
    names = bucket_names()
    lines = ["| run | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in results:
        a, b = window(r, short), window(r, full)
        if r["phase"] in ("main", "ext") and r["seed"] == 0 and a is not None and b is not None:
            gain = documents.context_gain(a, b)
            lines.append(f"| {r['run']} | " + " | ".join(_fmt(gain[n], "+.4f") for n in names) + " |")
    return lines


def passkey_lines(results: list[dict]) -> list[str]:
    """Passkey accuracy by length, depths averaged (per depth in summary.json): all five
    digits right, and (in brackets) the share of digits right, chance 0.1."""
    with_key = [r for r in results if current_passkey(r)]
    stale = [r["run"] for r in results if r.get("passkey") and not current_passkey(r)]
    stale_line = f"(asked with an earlier question, not shown: {', '.join(stale)})"
    if not with_key:
        return [stale_line] if stale else []
    lengths = sorted({p["length"] for r in with_key for p in r["passkey"]})
    lines = ["| run | " + " | ".join(str(n) for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for r in with_key:
        cells = [[p for p in current_passkey(r) if p["length"] == n] for n in lengths]
        lines.append(f"| {r['run']} | " + " | ".join(
            f"{_fmt(np.mean([p['accuracy'] for p in c]), '.2f')} "
            f"({_fmt(np.mean([p['digit_accuracy'] for p in c]), '.2f')})" if c else "-"
            for c in cells) + " |")
    if stale:
        lines.append(stale_line)
    return lines


def passkey_depth_lines(results: list[dict], length: int) -> list[str]:
    """The fine-tuned (``pk``) runs' passkey at ``length`` by the needle's depth: where a
    model stops finding it (a shallow needle is the farthest from the question)."""
    cells = {r["run"]: {p["depth"]: p for p in current_passkey(r) if p["length"] == length}
             for r in results if r.get("phase") == "pk"}
    cells = {run: by_depth for run, by_depth in cells.items() if by_depth}
    depths = sorted({d for by_depth in cells.values() for d in by_depth})
    lines = ["| run | " + " | ".join(f"depth {d:g}" for d in depths) + " |",
             "|---|" + "---|" * len(depths)]
    for run, by_depth in sorted(cells.items()):
        lines.append(f"| {run} | " + " | ".join(
            f"{by_depth[d]['accuracy']:.2f} ({by_depth[d]['digit_accuracy']:.2f})"
            if d in by_depth else "-" for d in depths) + " |")
    return lines


def mqar_lines(results: list[dict]) -> list[str]:
    """Recall per setting: in distribution, then (apart) past the training lengths."""
    mqar = [r for r in results if r.get("mqar")]
    if not mqar:
        return []
    settings = {k: [(p["length"], p["pairs"]) for p in mqar[0]["mqar"][k]]
                for k in ("in_distribution", "extrapolation")}
    head = [f"{n}/{p}" for k in settings for n, p in settings[k]]
    lines = ["| run | " + " | ".join(head) + " |", "|---|" + "---|" * len(head),
             f"(length/pairs; the first {len(settings['in_distribution'])} in distribution)"]
    for r in mqar:
        cells = [p["recall"] for k in settings for p in r["mqar"][k]]
        lines.insert(-1, f"| {r['run']} | " + " | ".join(_fmt(c, ".3f") for c in cells) + " |")
    return lines


def tables(results: list[dict], scale: Scale, chosen: dict[str, float]) -> tuple[str, dict]:
    main, numbers = main_lines(results, scale.rows)
    sections = [
        ("Learning-rate sweep: validation bits/byte", sweep_lines(results, chosen)),
        (f"Main runs at {scale.rows}-token rows: test bits/byte", main),
        ("Length extrapolation: test bits/byte at each window (trained at "
         f"{scale.rows})", extrapolation_lines(results, scale.windows, scale.rows)),
        (f"After the {scale.ext_rows}-token extension: test bits/byte at each window",
         extrapolation_lines(results, scale.windows, scale.ext_rows, phase="ext")),
        (f"Context gain: bits/byte at a {min(scale.windows)}-token window minus at "
         f"{max(scale.windows)}, same targets", context_gain_lines(
             results, min(scale.windows), max(scale.windows))),
        ("Passkey accuracy (all five digits), depths averaged", passkey_lines(results)),
        (f"Passkey after the fine-tune at {PASSKEY_LENGTH} tokens, by the needle's depth",
         passkey_depth_lines(results, PASSKEY_LENGTH)),
        ("MQAR recall", mqar_lines(results)),
        ("Figures: issue 27's targets, read off the results", figure_lines(
            results, numbers, scale)),
    ]
    text = "\n\n".join(f"### {title}\n\n" + "\n".join(lines) for title, lines in sections
                       if len(lines) > 2 or (lines and not lines[0].startswith("|")))
    # (A table's header alone: nothing measured yet; a note alone is shown.)
    return text + "\n", numbers


def write(root: Path, scale: Scale) -> None:
    """Writes the tables and plots under ``root`` and prints the tables."""
    results = load(root)
    if not results:
        print(f"no {RESULT_FILE} under {root}: nothing to report")
        return
    chosen = chosen_lrs(scale, root)
    text, numbers = tables(results, scale, chosen)
    (root / "summary.md").write_text(text)
    (root / "summary.json").write_text(json.dumps(
        {"scale": dataclasses.asdict(scale), "plan": plan(scale), "chosen_lrs": chosen,
         "main": numbers, "figures": [{"figure": f.name, "measured": f.measured,
                                       "status": f.status()}
                                      for f in figures(results, numbers, scale)]},
        indent=1) + "\n")
    print(text)
    from benchmarks.quality import quality_plots  # Only here: matplotlib is slow to import.
    for path in quality_plots.plot_all(results, scale, root):
        print(f"plot: {path}")
