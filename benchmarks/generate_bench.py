"""Generation speed of TNL: prefill time, and per-token decode latency at short and
long context (constant for TNL: the decode state does not grow).

GPU (tnl-1b, random bfloat16 weights, 8K prefill, 256 decoded tokens, 1K and 32K context):

    python benchmarks/generate_bench.py

CPU smoke test: ``python benchmarks/generate_bench.py --small``.

Per-token decode latency at context ``c`` = (time of prefill(c) + N tokens − time of
prefill(c) + 1 token) / (N − 1), both timed the same way: warm-up call first (compile),
then the median of ``--repeats`` calls, each ended by ``block_until_ready``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from flax import nnx

from tnl_jax import ModelConfig, create_model, generate, load_model_config


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds, after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(cfg: ModelConfig, dtype: str):
    cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
    return nnx.jit(lambda: create_model(cfg, nnx.Rngs(0)))()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tnl-1b", help="preset name or YAML file")
    parser.add_argument("--small", action="store_true", help="tiny model and lengths (CPU smoke test)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prefill", type=int, default=8192)
    parser.add_argument("--decode", type=int, default=256)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 32768])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = load_model_config(args.config)
    if args.small:
        cfg = cfg.replace(vocab_size=384, decoder_embed_dim=64, decoder_layers=2,
                          decoder_attention_heads=2, glu_dim=128, pad_token_id=0)
        args.prefill, args.decode, args.contexts, args.repeats = 256, 16, [64, 512], 2
    model = build(cfg, args.dtype)
    rng = np.random.default_rng(0)
    prompt = lambda n: rng.integers(3, cfg.vocab_size, (args.batch, n)).astype(np.int32)
    run = lambda ids, new: generate(model, ids, new, temperature=0)

    print(f"{jax.devices()[0].device_kind}: d {cfg.decoder_embed_dim}, L {cfg.decoder_layers}, "
          f"{args.dtype}, batch {args.batch}, backend {cfg.attention_backend or 'default'}")
    ids = prompt(args.prefill)
    prefill_s = timed(lambda: run(ids, 1), args.repeats)
    print(f"prefill {args.prefill} tokens: {prefill_s * 1e3:.1f} ms "
          f"({args.batch * args.prefill / prefill_s:,.0f} tokens/s)")
    for context in args.contexts:
        ids = prompt(context)
        one = timed(lambda: run(ids, 1), args.repeats)
        many = timed(lambda: run(ids, args.decode), args.repeats)
        per_token = (many - one) / (args.decode - 1)
        print(f"decode at {context} context: {per_token * 1e3:.3f} ms/token "
              f"(median of {args.repeats}, {args.decode} tokens)")


if __name__ == "__main__":
    main()
