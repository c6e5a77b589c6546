"""Memory per token of the training step, TNL against softmax, at each row length: the
slope of the compiled step's memory in the tokens of a step. A step's program holds
parameters, optimizer state and gradients (fixed) beside activations (which grow with
its tokens); comparing whole programs counts TNL's gate weight (``d x d`` per layer,
with its gradient and moments) as if it were activation memory. Here each setting is
compiled at ``rows`` and ``2 * rows`` rows of ``seq`` tokens, and

    per token = (temp(2 rows) - temp(rows)) / (rows * seq),   fixed = temp(rows) - per token * tokens

(``temp``: XLA's temporaries, ``memory_analysis``). Nothing runs. ``--stand-in-ops``
replaces both attention ops by one stand-in (standin_ops.py): the rest of the step,
compared on the CPU too (whose ``xla`` backend and quadratic softmax would dominate).

    python -m benchmarks.training.memory_per_token --preset tnl-385m \\
        --settings 8:2048,2:8192,1:32768 model.dtype=bfloat16
"""
from __future__ import annotations

import argparse

import jax

from benchmarks.common.bench_args import colon_fields, comma_list
from benchmarks.training.standin_ops import parse_and_report
from benchmarks.training.train_memory import compiled_step
from tnl_jax.training import config as train_config


def slope(cfg: train_config.TrainConfig, rows: int, seq: int, loss_chunk_tokens: int) -> dict:
    """Temporaries per token (bytes) and the fixed part, from two compiles."""
    small, large = (compiled_step(cfg, n, seq, loss_chunk_tokens)[0].memory_analysis()
                    for n in (rows, 2 * rows))
    per_token = (large.temp_size_in_bytes - small.temp_size_in_bytes) / (rows * seq)
    return {"per_token_bytes": per_token,
            "fixed_bytes": small.temp_size_in_bytes - per_token * rows * seq,
            "arguments_bytes": small.argument_size_in_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default=None, help="default: tnl-tiny at width 256")
    parser.add_argument("--settings", default="1:2048,1:8192",
                        type=comma_list(colon_fields("rows:seq", ints=(0, 1))),
                        help="rows x seq of the smaller compile; the larger has twice the rows")
    parser.add_argument("--archs", default="tnl,softmax")
    parser.add_argument("--remat", default="projections")
    parser.add_argument("--loss-chunk-tokens", type=int, default=-1)
    parse_and_report(parser, report)


def report(args) -> None:
    """Print the table: each setting's slope and fixed part, per architecture."""
    small = [] if args.preset else ["model.decoder_embed_dim=256", "model.decoder_layers=4",
                                    "model.decoder_attention_heads=4", "model.vocab_size=64000"]
    print(f"{jax.devices()[0].platform}: | arch | rows x seq | KiB/token | × softmax | "
          "fixed MiB | arguments MiB |")
    for rows, seq in args.settings:
        found = {}
        for arch in args.archs.split(","):
            cfg = train_config.load(args.preset, [*small, *args.overrides,
                                                  f"model.architecture={arch}",
                                                  f"model.remat={args.remat}"])
            found[arch] = slope(cfg, rows, seq, args.loss_chunk_tokens)
        ref = found.get("softmax")
        for arch, r in found.items():
            ratio = f"{r['per_token_bytes'] / ref['per_token_bytes']:.2f}" if ref else "-"
            print(f"| {arch} | {rows} x {seq} | {r['per_token_bytes'] / 1024:.2f} | {ratio} | "
                  f"{r['fixed_bytes'] / 2**20:.1f} | {r['arguments_bytes'] / 2**20:.1f} |",
                  flush=True)

if __name__ == "__main__":
    main()
