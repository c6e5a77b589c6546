"""Sweep launch parameters (chunk, blocks, warps, stages) of the Pallas kernels on the
GPU and print forward and forward+backward times per candidate: the measurements
behind the table in pallas_kernels/lightning/tuning.py.

    python benchmarks/tune_kernels.py --dims 128x128 --shapes 16x8192,1x131072
"""
from __future__ import annotations

import argparse
import itertools

import jax
import jax.numpy as jnp

from benchmarks.kernel_bench import fwd_bwd, ours, timed_ms
from pallas_kernels.lightning import tuning


def candidates(dk: int, dv: int) -> list[tuning.KernelConfig]:
    """Chunk 64 (chunk 128 lost everywhere at d 128), blocks, warps, stages."""
    found = []
    for block_v, block_k, warps, stages in itertools.product((32, 64, 128), (32, 64, 128),
                                                             (4, 8), (1, 2)):
        if block_v > dv or block_k > dk or (dk * block_v > 128 * 64 and warps == 4):
            continue
        found.append(tuning.KernelConfig(chunk=64, block_v=block_v, block_k=block_k,
                                         num_warps=warps, num_stages=stages))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="128x128")
    parser.add_argument("--shapes", default="16x8192,1x131072")
    parser.add_argument("--stages", default="1,2", help="pipeline stages to try")
    parser.add_argument("--heads", type=int, default=16)
    args = parser.parse_args()
    for dims in args.dims.split(","):
        dk, dv = map(int, dims.split("x"))
        for shape in args.shapes.split(","):
            batch, seq = map(int, shape.split("x"))
            keys = jax.random.split(jax.random.key(0), 4)
            q, k = (jax.random.normal(kk, (batch, seq, args.heads, dk)).astype(jnp.bfloat16) * dk ** -0.5
                    for kk in keys[:2])
            v, do = (jax.random.normal(kk, (batch, seq, args.heads, dv)).astype(jnp.bfloat16)
                     for kk in keys[2:])
            results = []
            stages = {int(s) for s in args.stages.split(",")}
            for config in (c for c in candidates(dk, dv) if c.num_stages in stages):
                tuning._TABLE[(dk, dv)] = config
                op = ours("pallas", args.heads)
                try:
                    fwd = timed_ms(jax.jit(op), q, k, v, rounds=10)
                    both = timed_ms(jax.jit(fwd_bwd(op)), q, k, v, do, rounds=10)
                except Exception as e:  # a candidate that does not lower is data
                    print(f"{dims} {shape} {config}: {type(e).__name__} {str(e)[:120]}", flush=True)
                    continue
                results.append((both, fwd, config))
                print(f"{dims} {shape} fwd {fwd:7.3f} fwd+bwd {both:7.3f} {config}", flush=True)
            print(f"best for {dims} {shape}:")
            for both, fwd, config in sorted(results, key=lambda r: r[0])[:5]:
                print(f"  fwd {fwd:7.3f} fwd+bwd {both:7.3f} {config}")


if __name__ == "__main__":
    main()
