"""What one decoder layer of each architecture keeps for its backward, per token: the
values its remat policy saves across the layer stack (``jax.ad_checkpoint.
saved_residuals``, in the layer's own backend: Pallas or cuDNN on a GPU) and the
compiled forward + backward's temporaries (its working set, held for one layer at a
time). TNL's memory per token against softmax's comes down to these two and the
parameters (TNL's gate adds a ``d x d`` weight per layer).

    python -m benchmarks.training.layer_residuals --preset tnl-385m --rows 4 --seq 8192

``--stand-in-ops`` replaces both attention ops by one stand-in with a fused kernel's
memory signature (standin_ops.py): what is left is the glue around the op (norms,
gate, activations, projections, MLP), compared on any platform (the CPU's ``xla``
backend and quadratic softmax would otherwise dominate the working set there).

Nothing runs: the layer is traced and compiled on abstract inputs (seconds).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import math
import re

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from benchmarks.training.standin_ops import parse_and_report
from tnl_jax.model.language_model import create_model
from tnl_jax.model.remat import REMAT_POLICIES
from tnl_jax.training import config as train_config


def layer_loss(cfg, kind: str):
    """``(params, rest, f)``: one layer of ``kind`` from ``cfg``'s model, and the sum of
    its output as a function of its parameters, input, segment ids and positions."""
    model = nnx.eval_shape(lambda: create_model(cfg, nnx.Rngs(0)))
    stack = next(s for s, (k, _, _) in zip(model.stacks, model.runs) if k == kind)
    graphdef, params, rest = nnx.split(stack.layers, nnx.Param, ...)
    first = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), tree)

    def f(params, rest, x, segment_ids, positions):
        layer = nnx.merge(graphdef, params, rest)
        return layer(x, segment_ids, positions).astype(jnp.float32).sum()
    return first(params), first(rest), f


SHORT_DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "i32": "int32",
                "u32": "uint32", "i8": "int8", "bool": "bool"}


def saved_values(f, *args) -> list[tuple[int, str]]:
    """``(bytes, source)`` of each value ``f``'s backward keeps, from jax's public
    ``print_saved_residuals`` (lines like ``bf16[4,8192,3,1024] named '...' from ...``)."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        print_saved_residuals(f, *args)
    found = []
    for line in filter(None, text.getvalue().splitlines()):
        short, shape, source = re.fullmatch(r"(\w+)\[([\d,]*)\] (.*)", line).groups()
        size = math.prod(int(n) for n in shape.split(",") if n)
        found.append((size * jnp.dtype(SHORT_DTYPES[short]).itemsize, source))
    return found


def _layer_inputs(cfg, rows: int, seq: int) -> tuple:
    """Abstract ``x, segment_ids, positions`` of one layer's call."""
    ids = jax.ShapeDtypeStruct((rows, seq), jnp.int32)
    return jax.ShapeDtypeStruct((rows, seq, cfg.decoder_embed_dim), cfg.compute_dtype), ids, ids


def saved_per_token(cfg, kind: str, rows: int, seq: int) -> dict[str, float]:
    """Bytes per token that one ``kind`` layer keeps for its backward under
    ``cfg.remat``, by source (the weights, kept anyway, left out)."""
    params, rest, f = layer_loss(cfg, kind)
    f = jax.checkpoint(f, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
    saved = collections.Counter()
    for size, source in saved_values(f, params, rest, *_layer_inputs(cfg, rows, seq)):
        if "from the argument params" in source or "from the argument rest" in source:
            continue  # weights: kept anyway, not per token
        saved[source.split(" from /")[0]] += size / (rows * seq)
    return dict(saved)


def per_token(cfg, kind: str, rows: int, seq: int) -> dict:
    """Saved bytes per token by source, and the compiled forward + backward's temporary
    bytes per token, of one ``kind`` layer under ``cfg.remat``."""
    params, rest, f = layer_loss(cfg, kind)
    f = jax.checkpoint(f, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
    grad = jax.jit(jax.grad(f, argnums=(0, 2)))
    compiled = grad.lower(params, rest, *_layer_inputs(cfg, rows, seq)).compile()
    return {"saved": saved_per_token(cfg, kind, rows, seq),
            "temp_per_token": compiled.memory_analysis().temp_size_in_bytes / (rows * seq)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tnl-385m")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq", type=int, default=8192)
    parser.add_argument("--remat", default="projections")
    parse_and_report(parser, report)


def report(args) -> None:
    """Print each architecture's saved values and working set per token."""
    ops = ", stand-in ops" if args.stand_in_ops else ""
    for arch, kind in (("tnl", "linear"), ("softmax", "softmax")):
        cfg = train_config.load(args.preset, [f"model.architecture={arch}",
                                              f"model.remat={args.remat}",
                                              *args.overrides]).model
        found = per_token(cfg, kind, args.rows, args.seq)
        d = cfg.decoder_embed_dim
        print(f"{arch} ({kind} layer, {jax.devices()[0].platform}, {args.rows} x {args.seq}, "
              f"remat {args.remat}{ops}): saved {sum(found['saved'].values()):.0f} B/token "
              f"({sum(found['saved'].values()) / (2 * d):.2f} d in bf16), "
              f"working set {found['temp_per_token']:.0f} B/token", flush=True)
        for source, size in found["saved"].items():
            print(f"  {size:8.0f} B/token  {source}")


if __name__ == "__main__":
    main()
