"""Tune the launch of each Pallas kernel alone (the forward walk, the dQ walk, the dK
and dV walks, the fused dK/dV walk): sweep feature block, warps and pipeline stages on
one-split inputs and print each kernel's time; the best per kernel becomes its row in
pallas_kernels/lightning/tuning.py. Also shows where the time of the op goes.
``--lowering mosaic`` sweeps the walks' Mosaic GPU lowering instead of Triton (there the
block is the columns of a program, 64 per compute warpgroup; warps do not apply).
``--split-chunks`` times the whole op, forward and backward, at each number of chunks
per sequence split (and at the split policy's choice), to tune ``split_chunks``.

    python -m benchmarks.kernel.tune_kernels --dims 128x128 --shapes 16x8192,64x2048
    python -m benchmarks.kernel.tune_kernels --kernels fwd --lowering mosaic --blocks 64 --warps 4
    python -m benchmarks.kernel.tune_kernels --kernels none --shapes 1x131072 --split-chunks 64,128
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp

from benchmarks.common.timing import timed_ms
from pallas_kernels import lightning_attention
from pallas_kernels.lightning import passes, tuning
from pallas_kernels.lightning.launch import LOWERINGS, Launch
from pallas_kernels.lightning.layout import WalkLayout


def kernel_calls(batch: int, seq: int, heads: int, chunk: int, interpret: bool) -> dict:
    """``name -> (fn(launch, q, k, v, do, state) -> outputs, the head axis its block
    cuts: "dk", "dv" or None for the whole state)``."""
    layout = WalkLayout(chunk=chunk, chunks_per_split=seq // chunk, splits=1, seq_len=seq)
    gamma = (jnp.arange(1, heads + 1, dtype=jnp.float32) / heads).reshape(heads, 1)
    run = jnp.zeros((batch, seq), jnp.int32)
    entry_run = jnp.zeros((batch, 1), jnp.int32)
    walk = dict(gamma=gamma, run=run, entry_run=entry_run, layout=layout, interpret=interpret)
    return {
        "fwd": (lambda c, q, k, v, do, s: passes.forward(
            q, k, v, entry_states=s, launch=c, emit_output=True, emit_state=True, **walk),
            "dv"),
        "dq": (lambda c, q, k, v, do, s: passes.dq(
            q, k, v, do, entry_states=s, launch=c, decay_grad=False, **walk), "dk"),
        "dk": (lambda c, q, k, v, do, s: passes.dk(
            q, k, v, do, exit_dstates=s, launch=c, decay_grad=False, **walk), "dk"),
        "dv": (lambda c, q, k, v, do, s: passes.dv(
            q, k, do, exit_dstates=s, launch=c, emit_output=True, emit_state=True, **walk),
            "dv"),
        "dkdv_fused": (lambda c, q, k, v, do, s: passes.dkdv(
            q, k, v, do, exit_dstates=s, launch=c, decay_grad=False, emit_state=True, **walk),
            None),
    }


def op_forward_and_backward(chunks_per_split: int | None, interpret: bool):
    """The whole op's forward and backward with the table's launches and a given number
    of chunks per sequence split (None: the split policy's)."""
    def op(q, k, v):
        decay = jnp.linspace(0.05, 1.0, q.shape[2], dtype=jnp.float32)
        dk, dv = (tuning.padded_head_dim(x.shape[-1]) for x in (q, v))
        config = tuning.kernel_config(dk, dv, None, itemsize=2,
                                      mosaic=interpret or tuning.has_wgmma())
        return lightning_attention(
            q, k, v, decay, backend="interpret" if interpret else "pallas",
            kernel_config=dataclasses.replace(config, chunks_per_split=chunks_per_split))

    def run(q, k, v, do):
        o, vjp = jax.vjp(op, q, k, v)
        return o, vjp(do)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="128x128")
    parser.add_argument("--shapes", default="16x8192,64x2048")
    parser.add_argument("--kernels", default="fwd,dq,dk,dv,dkdv_fused")
    parser.add_argument("--blocks", default="64,128")
    parser.add_argument("--warps", default="4,8")
    parser.add_argument("--stages", default="1,2,3")
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--lowering", default="triton", choices=LOWERINGS,
                        help="of every walk but the fused dK/dV one (Triton only)")
    parser.add_argument("--split-chunks", default="",
                        help="chunks per split to time the whole op at (comma-separated)")
    parser.add_argument("--interpret", action="store_true", help="smoke test on CPU")
    args = parser.parse_args()
    ints = lambda text: [int(x) for x in text.split(",")]
    for dims, shape in itertools.product(args.dims.split(","), args.shapes.split(",")):
        dk, dv = map(int, dims.split("x"))
        batch, seq = map(int, shape.split("x"))
        keys = jax.random.split(jax.random.key(0), 4)
        q, k = (jax.random.normal(kk, (batch, seq, args.heads, dk)).astype(jnp.bfloat16) * dk ** -0.5
                for kk in keys[:2])
        v, do = (jax.random.normal(kk, (batch, seq, args.heads, dv)).astype(jnp.bfloat16)
                 for kk in keys[2:])
        state = jnp.full((batch, args.heads, 1, dk, dv), 0.01, jnp.float32)
        calls = kernel_calls(batch, seq, args.heads, args.chunk, args.interpret)
        for name in args.kernels.split(",") if args.kernels != "none" else []:
            fn, axis = calls[name]
            best = None
            width = dk if axis == "dk" else dv
            blocks = [b for b in ints(args.blocks) if b <= width] if axis else [0]
            for block, warps, stages in itertools.product(blocks, ints(args.warps), ints(args.stages)):
                launch = Launch(block, warps, stages, args.chunk,
                                lowering=args.lowering if name != "dkdv_fused" else "triton")
                label = f"{dims} {shape} {name:10s} {launch}"
                try:
                    ms = timed_ms(jax.jit(functools.partial(fn, launch)), q, k, v, do, state,
                                  rounds=10)
                except Exception as e:  # a candidate that does not lower is data
                    print(f"{label}: {type(e).__name__} {str(e)[:150]}", flush=True)
                    continue
                print(f"{label}: {ms:7.3f} ms", flush=True)
                best = min(best or (ms, label), (ms, label))
            if best:
                print(f"best {best[1]}: {best[0]:.3f} ms", flush=True)
        for per_split in ints(args.split_chunks) if args.split_chunks else []:
            ms = timed_ms(jax.jit(op_forward_and_backward(per_split, args.interpret)),
                          q, k, v, do, rounds=10)
            print(f"{dims} {shape} op fwd+bwd, {per_split} chunks per split: {ms:7.3f} ms")
        if args.split_chunks:
            ms = timed_ms(jax.jit(op_forward_and_backward(None, args.interpret)), q, k, v, do,
                          rounds=10)
            print(f"{dims} {shape} op fwd+bwd, split policy: {ms:7.3f} ms", flush=True)


if __name__ == "__main__":
    main()
