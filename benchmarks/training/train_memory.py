"""Compile-time memory of one training step, per loss chunking and remat policy.

    python -m benchmarks.training.train_memory                      # width 256, 4 layers, 64000 vocab
    python -m benchmarks.training.train_memory --preset tnl-385m --rows 1 --seq 32768 model.dtype=bfloat16

Nothing runs: the step (``training.steps.make_train_step``, AdamW) is lowered on
abstract parameters and batch and compiled, and XLA's ``memory_analysis`` gives its
temporaries (activations, logits, gradients in flight) beside its arguments (parameters,
optimizer state, batch). On the CPU these are estimates of the CPU program, not of a
GPU's. Prints a Markdown table, one row per (loss_chunk_tokens, remat); with ``--time N``
it also runs N steps on random tokens and gives the median step time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from tnl_jax.data import BATCH_KEYS
from tnl_jax.model import create_model
from tnl_jax.model.remat import REMAT_POLICIES
from tnl_jax.training import config as train_config
from tnl_jax.training import optim
from tnl_jax.training.steps import make_train_step

SMALL = ["model.vocab_size=64000", "model.decoder_embed_dim=256", "model.decoder_layers=4",
         "model.decoder_attention_heads=4"]


def compiled_step(cfg: train_config.TrainConfig, rows: int, seq: int, loss_chunk_tokens: int):
    """The train step compiled for abstract parameters and batch; and the optimizer."""
    def create():
        return create_model(cfg.model, nnx.Rngs(0))

    graphdef, params, _ = nnx.split(nnx.eval_shape(create), nnx.Param, ...)
    rest = jax.jit(lambda: nnx.split(create(), nnx.Param, ...)[2])()
    tx, schedule = optim.adamw(params, nnx.get_partition_spec(params), lr=cfg.lr,
                               warmup=cfg.warmup, steps=cfg.steps,
                               min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay,
                               beta1=cfg.beta1, beta2=cfg.beta2, grad_clip=cfg.grad_clip)
    state = {"params": params, "opt_state": jax.eval_shape(tx.init, params),
             "step": jax.ShapeDtypeStruct((), jnp.int32)}
    batch = {k: jax.ShapeDtypeStruct((rows, seq), jnp.float32 if k == "loss_mask" else jnp.int32)
             for k in BATCH_KEYS}
    step = make_train_step(graphdef, rest, tx, schedule, 1, loss_chunk_tokens)
    return jax.jit(step, donate_argnums=0).lower(state, batch).compile(), tx


def median_step_ms(compiled, tx, cfg: train_config.TrainConfig, rows: int, seq: int,
                   steps: int) -> float:
    """Median milliseconds of ``steps`` steps (after two) on random tokens."""
    params = jax.jit(lambda: nnx.split(create_model(cfg.model, nnx.Rngs(0)), nnx.Param, ...)[1])()
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.int32(0)}
    ids = jax.random.randint(jax.random.key(0), (rows, seq + 1), 0, cfg.model.vocab_size)
    batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:],
             "segment_ids": jnp.ones((rows, seq), jnp.int32),
             "positions": jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (rows, seq)),
             "loss_mask": jnp.ones((rows, seq), jnp.float32)}
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        state, stats = compiled(state, batch)
        jax.block_until_ready(stats)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default=None, help="default: tnl-tiny with " + " ".join(SMALL))
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--chunks", default="0,1024", help="loss_chunk_tokens values")
    parser.add_argument("--remats", default=",".join(REMAT_POLICIES))
    parser.add_argument("--time", type=int, default=0,
                        help="also run this many steps on random tokens: median ms")
    parser.add_argument("overrides", nargs="*", help="key=value, as for train.py")
    args = parser.parse_args()
    overrides = (SMALL if args.preset is None else []) + args.overrides
    base = train_config.load(args.preset, overrides)
    print(f"{base.model.decoder_layers} layers, width {base.model.decoder_embed_dim}, vocab "
          f"{base.model.vocab_size}, {args.rows} x {args.seq} tokens, dtype {base.model.dtype}, "
          f"{jax.devices()[0].platform}")
    print("| loss_chunk_tokens | remat | temp bytes | temp MiB | arguments MiB | step ms |")
    print("|---|---|---|---|---|---|")
    chunks = [int(c) for c in args.chunks.split(",")]
    for remat in args.remats.split(","):
        cfg = train_config.apply(base, {"model.remat": remat})
        for chunk in chunks:
            compiled, tx = compiled_step(cfg, args.rows, args.seq, chunk)
            m = compiled.memory_analysis()
            ms = (f"{median_step_ms(compiled, tx, cfg, args.rows, args.seq, args.time):.1f}"
                  if args.time else "-")
            print(f"| {chunk} | {remat} | {m.temp_size_in_bytes} | "
                  f"{m.temp_size_in_bytes / 2**20:.1f} | "
                  f"{m.argument_size_in_bytes / 2**20:.1f} | {ms} |", flush=True)

if __name__ == "__main__":
    main()
