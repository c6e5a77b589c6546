"""Per-kernel device time of a jitted call, read from a JAX profile (``jax.profiler``'s
XSpace, via ``jax.profiler.ProfileData``): which kernels a step spends its time in,
measured, not guessed.

    table = kernel_times(lambda: step(state, batch), repeats=3)
    print(format_table(table, top=30))
"""
from __future__ import annotations

import collections
import glob
import re
import tempfile
from typing import Callable

import jax
from jax.profiler import ProfileData

# Kernel names -> the kind of work, for a first look at where the time goes.
KINDS = (
    ("matmul", r"gemm|nvjet|cutlass|cublas|sm90_xmma|wgmma|_gemm_|dot"),
    ("attention (ours)", r"lightning|chunk|walk|intra|inter|dq_|dkv|_dk_|_dv_|state"),
    ("softmax attention", r"cudnn|flash|fmha|sdpa"),
    ("collective", r"nccl|all-reduce|all-gather|reduce-scatter|collective"),
    ("copy/transpose", r"copy|transpose|memcpy|memset"),
    ("loss/reduce", r"reduce|scatter|gather"),
    ("fused elementwise", r"fusion|loop_|input_|elementwise"),
)


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def kernel_times(run: Callable[[], object], repeats: int = 3) -> dict:
    """Runs ``run`` (already compiled) ``repeats`` times under the profiler and returns
    ``{"per_call_ms": total device kernel ms per call, "kernels": [(name, ms per call,
    launches per call)], "kinds": {kind: ms per call}}``, GPU 0's kernels only."""
    jax.block_until_ready(run())
    log_dir = tempfile.mkdtemp(prefix="profile-")
    with jax.profiler.trace(log_dir):
        for _ in range(repeats):
            jax.block_until_ready(run())
    (path,) = glob.glob(f"{log_dir}/**/*.xplane.pb", recursive=True)
    totals, counts = collections.Counter(), collections.Counter()
    for plane in ProfileData.from_file(path).planes:
        if not plane.name.startswith("/device:GPU:0"):
            continue
        for line in plane.lines:
            if not line.name.startswith("Stream"):  # Kernels, not the op/module lines.
                continue
            for event in line.events:
                op = dict(event.stats).get("hlo_op")  # The HLO instruction: find it in
                name = f"{event.name} [{op}]" if op else event.name  # compiled.as_text().
                totals[name] += event.duration_ns / 1e6 / repeats
                counts[name] += 1 / repeats
    kinds = collections.Counter()
    for name, ms in totals.items():
        kinds[kind_of(name)] += ms
    return {"per_call_ms": sum(totals.values()),
            "kernels": [(n, ms, counts[n]) for n, ms in totals.most_common()],
            "kinds": dict(kinds.most_common())}


def format_table(times: dict, top: int = 25) -> str:
    if not times["kernels"]:
        return "no GPU kernels in the profile (kernel_times reads GPU 0's streams only)"
    total = times["per_call_ms"]
    lines = [f"device kernel time per call: {total:.2f} ms", "", "| kind | ms | share |",
             "|---|---|---|"]
    lines += [f"| {k} | {ms:.2f} | {100 * ms / total:.1f}% |" for k, ms in times["kinds"].items()]
    lines += ["", "| kernel | kind | ms | launches | share |", "|---|---|---|---|---|"]
    for name, ms, n in times["kernels"][:top]:
        lines.append(f"| {name[:90]} | {kind_of(name)} | {ms:.3f} | {n:.0f} | "
                     f"{100 * ms / total:.1f}% |")
    return "\n".join(lines)
