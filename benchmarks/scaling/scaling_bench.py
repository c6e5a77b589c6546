"""Scaling over the GPUs of one host: the op sharded against one device's share, and
training tnl-385m on 1 GPU, DP, FSDP, TP and CP (context parallel), in one run.

    NCCL_NVLS_ENABLE=0 python -m benchmarks.scaling.scaling_bench --out $OUT

The op: fwd+bwd (bf16, d 128, fixed decays) of a global batch split over the devices,
in every mode (plain ``jax.jit`` on Auto axes, Explicit axes, ``shard_axes``), against
the same per-device shapes on one device alone, and the sequence split (CP) against one
device's half of the row; the collectives of each compiled program are listed (count and
largest array, in elements). Training: tokens/s (median of the steps after warm-up),
MFU and peak memory per GPU, from ``train.py``'s own metrics and end-of-run report, one
subprocess per layout (``CUDA_VISIBLE_DEVICES`` picks the GPUs).

Issue 31's targets on two GPUs (train.py sets XLA's overlap flags, ``training.overlap``):

    NCCL_NVLS_ENABLE=0 python -m benchmarks.scaling.scaling_bench --parts train \
        --layouts 1gpu,dp2,dp2-no-overlap,dp2-bf16 --steps 10    # DP >= 1.9x one GPU
    NCCL_NVLS_ENABLE=0 python -m benchmarks.scaling.scaling_bench --parts op  # seq <= 1.2x
    NCCL_NVLS_ENABLE=0 python -m benchmarks.scaling.scaling_bench --parts train \
        --preset tnl-1b --layouts 1gpu,dp2,fsdp2 --steps 10      # FSDP=2 <= 0.7x DP's memory
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from benchmarks.common.timing import fwd_bwd, is_out_of_memory, timed_ms
from pallas_kernels import ShardAxes, lightning_attention

COLLECTIVE = re.compile(r"= (.*?) (all-gather|all-reduce|reduce-scatter|all-to-all|"
                        r"collective-permute)(?:-start)?\(")


def collectives(compiled_text: str) -> tuple[int, int]:
    """``(count, elements of the largest array)`` of the program's collectives."""
    found = COLLECTIVE.findall(compiled_text)
    largest = 0
    for types, _ in found:
        for dims in re.findall(r"\w+\[([\d,]*)\]", types):
            size = 1
            for d in filter(None, dims.split(",")):
                size *= int(d)
            largest = max(largest, size)
    return len(found), largest


def op_inputs(batch: int, seq: int, heads: int, dim: int):
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v, do = (jax.random.normal(key, (batch, seq, heads, dim), jnp.bfloat16) * 0.1
                   for key in keys)
    return q, k, v, do


def rel_err(grads, reference) -> float:
    """The largest relative error (Frobenius) over the gradients."""
    pairs = [(np.asarray(g, np.float32), np.asarray(r, np.float32))
             for g, r in zip(jax.device_get(grads), jax.device_get(reference))]
    return max(float(np.linalg.norm(g - r) / np.linalg.norm(r)) for g, r in pairs)


def op_row(name: str, fn, args, devices: int, share_ms: float | None,
           reference=None) -> dict:
    compiled = jax.jit(fn).lower(*args).compile()
    count, largest = collectives(compiled.as_text())
    ms = timed_ms(jax.jit(fn), *args)
    error = None if reference is None else rel_err(jax.jit(fn)(*args), reference)
    return {"case": name, "devices": devices, "fwd_bwd_ms": ms,
            "x_share": None if share_ms is None else ms / share_ms,
            "collectives": count, "largest_collective": largest,
            "q_elements": args[0].size, "rel_err_vs_one_device": error}


def op_rows(args) -> list[dict]:
    """The op over all devices vs one device's share, for a batch and a sequence split."""
    n = jax.device_count()
    heads, dim, backend = args.heads, 128, args.backend
    decay = jnp.arange(1, heads + 1, dtype=jnp.float32) / heads
    rows = []
    for split, (batch, seq) in (("batch", (args.op_batch, args.op_seq)),
                                ("seq", (1, args.cp_seq))):
        def op(q, k, v, **kw):
            return lightning_attention(q, k, v, decay, backend=backend, **kw)
        share_shape = (batch // n, seq) if split == "batch" else (1, seq // n)
        share = op_inputs(*share_shape, heads, dim)
        one = jax.device_put(share, jax.devices()[0])
        share_ms = op_row(f"{split}: one device's share {share_shape}",
                          fwd_bwd(op), one, 1, None)
        rows.append(share_ms)
        spec = P("x", None, None, None) if split == "batch" else P(None, "x", None, None)
        axes = ShardAxes(batch="x") if split == "batch" else ShardAxes(seq="x")
        full = op_inputs(batch, seq, heads, dim)
        reference = jax.jit(fwd_bwd(op))(*jax.device_put(full, jax.devices()[0]))
        for mode in ("auto", "explicit", "shard_axes"):
            kind = AxisType.Explicit if mode == "explicit" else AxisType.Auto
            mesh = jax.make_mesh((n,), ("x",), axis_types=(kind,))
            sharded = jax.device_put(full, NamedSharding(mesh, spec))
            fn = functools.partial(op, shard_axes=axes) if mode == "shard_axes" else op
            with jax.set_mesh(mesh):
                rows.append(op_row(f"{split}: {mode} {(batch, seq)} over {n}", fwd_bwd(fn),
                                   sharded, n, share_ms["fwd_bwd_ms"], reference))
            print(rows[-1], flush=True)
    return rows


def op_table(rows: list[dict]) -> str:
    lines = ["| case | GPUs | fwd+bwd ms | × one device's share | collectives | largest "
             "(elements) | q (elements) | rel. err vs one device |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r["x_share"] is None else f"{r['x_share']:.3f}"
        err = r["rel_err_vs_one_device"]
        lines.append(f"| {r['case']} | {r['devices']} | {r['fwd_bwd_ms']:.3f} | {ratio} | "
                     f"{r['collectives']} | {r['largest_collective']} | {r['q_elements']} | "
                     f"{'-' if err is None else f'{err:.1e}'} |")
    return "\n".join(lines)


ROOT = Path(__file__).resolve().parents[2]  # The repository, where train.py is.
# id, name, GPUs, rows x length, mesh (data, fsdp, tensor, context)
TRAIN_LAYOUTS = [
    ("1gpu", "1 GPU", 1, (4, 8192), (1, 1, 1, 1)),
    ("dp2", "DP=2", 2, (8, 8192), (2, 1, 1, 1)),
    ("fsdp2", "FSDP=2", 2, (8, 8192), (1, 2, 1, 1)),
    ("tp2", "TP=2", 2, (4, 8192), (1, 1, 2, 1)),
    ("1gpu-64k", "1 GPU, 1 x 64K", 1, (1, 65536), (1, 1, 1, 1)),
    ("cp2-64k", "CP=2, that row", 2, (1, 65536), (1, 1, 1, 2)),
    # With the chunked loss a 64K row fits one GPU: the rows twice as long again.
    ("1gpu-128k", "1 GPU, 1 x 128K", 1, (1, 131072), (1, 1, 1, 1)),
    ("cp2-128k", "CP=2, 1 x 128K", 2, (1, 131072), (1, 1, 1, 2)),
    # DP=2 without train.py's overlap flags, and with the gradient reduced in bf16.
    ("dp2-no-overlap", "DP=2, no overlap flags", 2, (8, 8192), (2, 1, 1, 1)),
    ("dp2-bf16", "DP=2, bf16 reduction", 2, (8, 8192), (2, 1, 1, 1)),
]
# What a layout changes beyond its mesh: (train.py overrides, environment).
LAYOUT_EXTRAS = {"dp2-no-overlap": ((), {"TNL_JAX_OVERLAP_FLAGS": "0"}),
                 "dp2-bf16": (("grad_reduce_dtype=bfloat16",), {})}


def train_row(name: str, gpus: int, rows: tuple[int, int], mesh, args,
              extras: tuple[tuple[str, ...], dict[str, str]] = ((), {})) -> dict:
    """One ``train.py`` run: median tokens/s and MFU of the steps after the first
    ``steps // 3``, and the peak memory it reports; ``extras``: more overrides and
    environment (``LAYOUT_EXTRAS``)."""
    batch, seq = rows
    data, fsdp, tensor, context = mesh
    run_dir = tempfile.mkdtemp(prefix="scaling-")
    steps = args.steps
    command = [sys.executable, str(ROOT / "train.py"), "--config", args.preset,
               f"steps={steps}", f"seq_len={seq}", f"batch_size={batch}",
               f"model.attention_backend={args.backend or 'pallas'}", "model.dtype=bfloat16",
               "warmup=2",
               "log_every=1", "eval_every=0", "checkpoint_every=100000", "sample_tokens=0",
               f"mesh.data={data}", f"mesh.fsdp={fsdp}", f"mesh.tensor={tensor}",
               f"mesh.context={context}", f"run_dir={run_dir}", *args.train_extra.split(),
               *extras[0]]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(map(str, range(gpus))), **extras[1]}
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    row = {"layout": name, "gpus": gpus, "rows": f"{batch} x {seq // 1024}K",
           "mesh": dict(zip(("data", "fsdp", "tensor", "context"), mesh))}
    peak = re.search(r"peak device memory: ([\d.]+) GiB", out.stdout)
    if out.returncode != 0:
        oom = is_out_of_memory(out.stderr)
        needs = re.search(r"(?:allocate|Allocator).*?([\d.]+)\s*GiB", out.stderr)
        return {**row, "error": "out of memory" if oom else out.stderr[-1500:],
                "detail": needs.group(0)[:200] if needs else None}
    records = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    timed = [r for r in records if r["step"] > steps // 3 and "tokens_per_s" in r]
    return {**row, "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
            "mfu": statistics.median(r["mfu"] for r in timed) if timed[0].get("mfu") else None,
            "peak_gib": float(peak.group(1)) if peak else None,
            "final_loss": records[-1]["loss"]}


def train_rows(args) -> list[dict]:
    rows = []
    for layout, name, gpus, shape, mesh in TRAIN_LAYOUTS:
        if layout not in args.layouts.split(","):
            continue
        rows.append(train_row(name, gpus, shape, mesh, args,
                              LAYOUT_EXTRAS.get(layout, ((), {}))))
        print(rows[-1], flush=True)
    return rows


def train_table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["layout"] == "1 GPU" and "tokens_per_s" in r), None)
    dp = next((r for r in rows if r["layout"] == "DP=2" and "tokens_per_s" in r), None)
    lines = ["| layout | GPUs | rows | tokens/s | × 1 GPU | × DP=2 | MFU | peak GiB per GPU |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['layout']} | {r['gpus']} | {r['rows']} | {r['error'][:60]} "
                         f"| | | | |")
            continue
        ratio = lambda ref: f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}" if ref else "-"
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['layout']} | {r['gpus']} | {r['rows']} | "
                     f"{r['tokens_per_s'] / 1e3:.1f}K | {ratio(base)} | {ratio(dp)} | {mfu} | "
                     f"{r['peak_gib']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="op,train")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--op-batch", type=int, default=16)
    parser.add_argument("--op-seq", type=int, default=8192)
    parser.add_argument("--cp-seq", type=int, default=131072)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--preset", default="tnl-385m")
    parser.add_argument("--layouts", default=",".join(l[0] for l in TRAIN_LAYOUTS))
    parser.add_argument("--train-extra", default="", help="more train.py overrides")
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}",
          flush=True)
    text, results = "", {}
    if "op" in args.parts:
        results["op"] = op_rows(args)
        text += op_table(results["op"]) + "\n"
    if "train" in args.parts:
        results["train"] = train_rows(args)
        text += "\n" + train_table(results["train"]) + "\n"
    if args.out:
        with open(os.path.join(args.out, "scaling_bench.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "scaling_bench.md"), "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
