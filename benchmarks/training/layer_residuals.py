"""What one decoder layer of each architecture keeps for its backward, per token: the
values its remat policy saves across the layer stack (``jax.ad_checkpoint.
saved_residuals``, in the layer's own backend: Pallas or cuDNN on a GPU) and the
compiled forward + backward's temporaries (its working set, held for one layer at a
time). TNL's memory per token against softmax's comes down to these two and the
parameters (TNL's gate adds a ``d x d`` weight per layer).

    python -m benchmarks.training.layer_residuals --preset tnl-385m --rows 4 --seq 8192

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


def per_token(cfg, kind: str, rows: int, seq: int) -> dict:
    """Saved bytes per token by source, and the compiled forward + backward's temporary
    bytes per token, of one ``kind`` layer under ``cfg.remat``."""
    params, rest, f = layer_loss(cfg, kind)
    f = jax.checkpoint(f, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
    x = jax.ShapeDtypeStruct((rows, seq, cfg.decoder_embed_dim), cfg.compute_dtype)
    ids = jax.ShapeDtypeStruct((rows, seq), jnp.int32)
    tokens = rows * seq
    saved = collections.Counter()
    for size, source in saved_values(f, params, rest, x, ids, ids):
        if "from the argument params" in source or "from the argument rest" in source:
            continue  # weights: kept anyway, not per token
        saved[source.split(" from /")[0]] += size / tokens
    grad = jax.jit(jax.grad(f, argnums=(0, 2)))
    temp = grad.lower(params, rest, x, ids, ids).compile().memory_analysis().temp_size_in_bytes
    return {"saved": dict(saved), "temp_per_token": temp / tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tnl-385m")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq", type=int, default=8192)
    parser.add_argument("--remat", default="projections")
    parser.add_argument("overrides", nargs="*", help="key=value, as for train.py")
    args = parser.parse_args()
    for arch, kind in (("tnl", "linear"), ("softmax", "softmax")):
        cfg = train_config.load(args.preset, [f"model.architecture={arch}",
                                              f"model.remat={args.remat}",
                                              *args.overrides]).model
        found = per_token(cfg, kind, args.rows, args.seq)
        d = cfg.decoder_embed_dim
        print(f"{arch} ({kind} layer, {jax.devices()[0].platform}, {args.rows} x {args.seq}, "
              f"remat {args.remat}): saved {sum(found['saved'].values()):.0f} B/token "
              f"({sum(found['saved'].values()) / (2 * d):.2f} d in bf16), "
              f"working set {found['temp_per_token']:.0f} B/token", flush=True)
        for source, size in found["saved"].items():
            print(f"  {size:8.0f} B/token  {source}")


if __name__ == "__main__":
    main()
