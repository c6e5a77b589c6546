"""generate_bench.py's rows as Markdown tables and a plot: each decode time beside its
memory floor, so that the table says how far a step is from what the hardware allows."""
from __future__ import annotations

from benchmarks.generation.decode_floor import floor_ms


def add_floors(rows: list[dict], copy_tbps: float, spec_tbps: float | None) -> list[dict]:
    """Decode rows gain ``floor_ms`` (at the measured copy rate), ``floor_spec_ms`` (at
    the device's data-sheet bandwidth ``spec_tbps``, if known) and ``x_floor`` (time over
    the measured-rate floor)."""
    for row in rows:
        if "bytes_per_step" in row:
            row["floor_ms"] = floor_ms(row["bytes_per_step"], copy_tbps)
            if spec_tbps is not None:
                row["floor_spec_ms"] = floor_ms(row["bytes_per_step"], spec_tbps)
            if "ms_per_token" in row:
                row["x_floor"] = row["ms_per_token"] / row["floor_ms"]
    return rows


def _k(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def table(rows: list[dict], copy_tbps: float, spec_tbps: float | None) -> str:
    """Prefill table (tokens/s), then decode table (ms/token, floor, ratio)."""
    spec = "no spec for this device" if spec_tbps is None else f"spec {spec_tbps} TB/s"
    lines = [f"Copy bandwidth measured: {copy_tbps:.3g} TB/s ({spec}); "
             "floor = bytes per step / measured rate.", "",
             "| model | prefill tokens | ms | tokens/s |", "|---|---|---|---|"]
    by_setting = lambda r: (r["context"], r["batch"])  # models side by side per setting
    for r in sorted((r for r in rows if r["phase"] == "prefill"), key=by_setting):
        lines.append(f"| {r['model']} | {_k(r['context'])} | " + (
            f"{r['error'][:60]} | |" if "error" in r else
            f"{r['ms']:.1f} | {r['tokens_per_s'] / 1e3:.0f}K |"))
    lines += ["", "| model | batch | context | ms/token | tokens/s | floor ms | × floor | "
              "floor ms at spec | generate() ms/token |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["phase"] == "decode"), key=by_setting):
        head = f"| {r['model']} | {r['batch']} | {_k(r['context'])} | "
        floor = f"{r['floor_ms']:.3g}" if "floor_ms" in r else "-"
        spec = f"{r['floor_spec_ms']:.3g}" if "floor_spec_ms" in r else "-"
        if "error" in r:
            lines.append(head + f"{r['error'][:60]} | | {floor} | | {spec} | |")
            continue
        check = f"{r['generate_ms_per_token']:.3f}" if "generate_ms_per_token" in r else ""
        lines.append(head + f"{r['ms_per_token']:.3f} | "
                     f"{r['batch'] / r['ms_per_token'] * 1e3:,.0f} | {floor} | "
                     f"{r.get('x_floor', float('nan')):.2f} | {spec} | {check} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str, title: str) -> None:
    """ms/token against context at batch 1, one line per model, its floor dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    decode = [r for r in rows if r["phase"] == "decode" and r["batch"] == 1]
    for model in dict.fromkeys(r["model"] for r in decode):
        points = sorted((r["context"], r["ms_per_token"], r["floor_ms"]) for r in decode
                        if r["model"] == model and "ms_per_token" in r and "floor_ms" in r)
        if points:
            line, = ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=model)
            ax.plot([p[0] for p in points], [p[2] for p in points], "--", lw=0.8,
                    color=line.get_color(), label=f"{model} floor")
    contexts = sorted({r["context"] for r in decode})
    ax.set(xscale="log", xlabel="context (tokens)", ylabel="decode ms/token, batch 1",
           title=title, ylim=(0, None))
    ax.set_xticks(contexts, [_k(c) for c in contexts])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
