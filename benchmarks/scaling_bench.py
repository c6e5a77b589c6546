"""Scaling over the GPUs of one host: the op sharded against one device's share, and
training tnl-385m on 1 GPU, DP, FSDP, TP and CP (context parallel), in one run.

    NCCL_NVLS_ENABLE=0 python benchmarks/scaling_bench.py --out $OUT

The op: fwd+bwd (bf16, d 128, fixed decays) of a global batch split over the devices,
in every mode (plain ``jax.jit`` on Auto axes, Explicit axes, ``shard_axes``), against
the same per-device shapes on one device alone, and the sequence split (CP) against one
device's half of the row; the collectives of each compiled program are listed (count and
largest array, in elements). Training: tokens/s (median of the steps after warm-up),
MFU and peak memory per GPU, from ``train.py``'s own metrics (benchmarks/train_runs.py).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from kernel_bench import fwd_bwd, timed_ms
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="op,train")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--op-batch", type=int, default=16)
    parser.add_argument("--op-seq", type=int, default=8192)
    parser.add_argument("--cp-seq", type=int, default=131072)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}",
          flush=True)
    text, results = "", {}
    if "op" in args.parts:
        results["op"] = op_rows(args)
        text += op_table(results["op"]) + "\n"
    if args.out:
        with open(os.path.join(args.out, "scaling_bench.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "scaling_bench.md"), "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
