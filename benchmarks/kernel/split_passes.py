"""Where the time of a long row goes: the op and each of its passes timed alone, at a
fixed number of tokens, from many rows (one sequence split) to one row (several).

Every pass streams operands of B·T·H·d bf16 values each. With one split the op streams
16 of them: the forward reads q, k, v and writes o; each of the dQ, dK and dV walks
reads three and writes one. With S splits the state-only passes add 2·(S−1)/S: the
forward's reads k and v of every split but the last, the backward's q and dO of every
split but the first. The table compares that count with the time.

    python -m benchmarks.kernel.split_passes --dims 128x128
"""
from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp

from benchmarks.common.timing import fwd_bwd, timed_ms
from benchmarks.kernel.kernel_bench import ours
from pallas_kernels.lightning import passes, tuning
from pallas_kernels.lightning.splits import split_layouts


def pass_times(q, k, v, do, heads: int) -> tuple[dict[str, float], int]:
    """``({pass: ms}, splits)`` with the op's launches and split policy (fixed decays)."""
    batch, seq, _, dk = q.shape
    dv = v.shape[-1]
    config = tuning.kernel_config(dk, dv, None, itemsize=2, mosaic=tuning.has_wgmma())
    layout, states = split_layouts(config, batch, heads, seq, dv)
    factor = states.splits // layout.splits
    gamma = (jnp.arange(1, heads + 1, dtype=jnp.float32) / heads).reshape(heads, 1)
    run = jnp.zeros((batch, seq), jnp.int32)
    entry_run = jnp.zeros((batch, states.splits), jnp.int32)
    entry = jnp.full((batch, heads, layout.splits, dk, dv), 0.01, jnp.float32)
    kw = dict(layout=layout, interpret=False)
    op, learned = ours("pallas", heads)
    times = {"op fwd": timed_ms(jax.jit(op), q, k, v),
             "op fwd+bwd": timed_ms(jax.jit(fwd_bwd(op, learned)), q, k, v, do)}
    walks = {
        "output pass": lambda q, k, v, do, g, r, e, s: passes.forward(
            q, k, v, g, r, e[:, :layout.splits], s, emit_output=True, emit_state=True,
            launch=config.forward, **kw),
        "dQ walk": lambda q, k, v, do, g, r, e, s: passes.dq(
            q, k, v, do, g, r, e[:, :layout.splits], s, launch=config.dq,
            decay_grad=False, **kw),
        "dK walk": lambda q, k, v, do, g, r, e, s: passes.dk(
            q, k, v, do, g, r, e[:, :layout.splits], s, launch=config.dk,
            decay_grad=False, **kw),
        "dV walk": lambda q, k, v, do, g, r, e, s: passes.dv(
            q, k, do, g, r, e[:, :layout.splits], s, emit_output=True, emit_state=False,
            launch=config.dv, **kw)}
    if layout.splits > 1:
        leading = dataclasses.replace(states, splits=states.splits - factor)
        tail = dataclasses.replace(leading, first_split=factor)
        walks["state pass"] = lambda q, k, v, do, g, r, e, s: passes.forward(
            q, k, v, g, r, e[:, :leading.splits], None, emit_output=False, emit_state=True,
            launch=config.states, layout=leading, interpret=False)
        walks["dS pass"] = lambda q, k, v, do, g, r, e, s: passes.dv(
            q, k, do, g, r, e[:, factor:], None, emit_output=False, emit_state=True,
            launch=config.states, layout=tail, interpret=False)
    for name, walk in walks.items():
        times[name] = timed_ms(jax.jit(walk), q, k, v, do, gamma, run, entry_run, entry)
    return times, layout.splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", default="2048,32768,131072")
    parser.add_argument("--tokens", type=int, default=131072)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--dims", default="128x128")
    args = parser.parse_args()
    names = ("op fwd", "op fwd+bwd", "output pass", "state pass", "dQ walk", "dK walk",
             "dV walk", "dS pass")
    print("| dk/dv | B × T | splits | operands streamed | × one split | fwd+bwd × first row | "
          + " | ".join(names) + " |")
    print("|---" * (len(names) + 6) + "|")
    for dims in args.dims.split(","):
        dk, dv = map(int, dims.split("x"))
        first = None
        for seq in map(int, args.seqs.split(",")):
            batch = max(1, args.tokens // seq)
            keys = jax.random.split(jax.random.key(seq), 4)
            q, k = (jax.random.normal(x, (batch, seq, args.heads, dk)).astype(jnp.bfloat16)
                    * dk ** -0.5 for x in keys[:2])
            v, do = (jax.random.normal(x, (batch, seq, args.heads, dv)).astype(jnp.bfloat16)
                     for x in keys[2:])
            times, splits = pass_times(q, k, v, do, args.heads)
            streamed = 16 + 4 * (splits - 1) / splits
            first = first or times["op fwd+bwd"]
            cells = " | ".join(f"{times[n]:.3f}" if n in times else "–" for n in names)
            print(f"| {dk}/{dv} | {batch} × {seq} | {splits} | {streamed:.2f} | "
                  f"{streamed / 16:.2f} | {times['op fwd+bwd'] / first:.2f} | {cells} |",
                  flush=True)


if __name__ == "__main__":
    main()
