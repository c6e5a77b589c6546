"""The training step's glue switches on the real lowering (one GPU, about 3 minutes):
each checked against its reference and timed against its baseline, then one table.

    python -m benchmarks.training.glue_check [--tokens 32768 --width 1024 --vocab 64000]
        [--only loss_kernel,norm_kernel,model_switches] [--untimed] [--out DIR]

``--only`` runs the parts named (the three below, by default all); ``--untimed`` checks
the norm kernels without timing them (a GPU shared with another process); ``--out``
writes the final table to ``DIR/glue_check.md``.

- ``loss_kernel=fused`` (pallas_kernels/cross_entropy): losses, hits, dh and dw of a
  small ragged problem (an ignored target) against the naive reference in float32 and
  bfloat16 (relative error bounds 1e-4 / 1e-2); then the loss's forward, and forward
  with backward, at the head's shape (bfloat16): the fused kernels in a few block
  configurations (``GPU_CONFIGS``) against the chunked loss (``loss_chunk_tokens`` -1,
  the default) and all logits at once, with the compiled programs' temporaries. The
  last configuration is ``loss_kernel=fused_xla_grads``'s (the backward in XLA's
  products).
- ``model.norm_kernel=pallas`` (pallas_kernels/norms): SRMSNorm and the token mixer's
  norm-gate against the ``jnp`` reference, output and gradients, at ``NORM_SHAPES``
  (the residual stream of tnl-385m's 32K-token step and of a width of 2048, bfloat16;
  float32 and a ragged row count too), then the forward, and forward with backward,
  of each against XLA's (the reference, jitted) in a few launches (rows per block,
  warps), with the kernels' bytes per ms.
- ``model.remat=projections_op_out``, ``model.scan_unroll`` and ``model.norm_kernel``:
  a small TNL (Pallas op, rows of ``--rows`` tokens) whose loss and gradients must
  equal those of ``projections``, of the one-layer-per-iteration scan and of XLA's
  norms (in float32: see ``check_model_switches``), and the time of its bfloat16
  gradient step under each.

The training step itself (tokens/s, memory) is train_bench's, switch by switch:
``--remat projections`` against ``--remat projections_op_out``, and ``--set
model.scan_unroll=N`` / ``--set loss_kernel=fused`` (or ``fused_xla_grads``) / ``--set
model.norm_kernel=pallas`` against none.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common.timing import is_out_of_memory, timed_ms
from pallas_kernels import norms
from pallas_kernels.cross_entropy import (CrossEntropyConfig, fused_cross_entropy,
                                          reference_cross_entropy)
from pallas_kernels.norms import reference as norms_reference
from pallas_kernels.norms.kernels import block_rows_for
from tnl_jax.model import ModelConfig, create_model
from tnl_jax.training import losses

TOLERANCE = {jnp.float32: 1e-4, jnp.bfloat16: 1e-2}
MIB = 2**20
PARTS = ("loss_kernel", "norm_kernel", "model_switches")  # What --only can name.


def rel_err(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def row(check: str, err: float | None = None, tol: float | None = None,
        base_ms: float | None = None, new_ms: float | None = None, note: str = "") -> dict:
    return dict(check=check, err=err, tol=tol, base_ms=base_ms, new_ms=new_ms, note=note)


def _weighted_grads(cross_entropy, h, w, targets, weights):
    """``(losses, correct), (dh, dw)`` of ``sum(losses · weights)``."""
    def loss(h, w):
        token, correct = cross_entropy(h, w, targets)
        return jnp.sum(token * weights), (token, correct)
    (_, outs), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(h, w)
    return outs, grads


def check_fused_loss(rng, backend: str, tokens: int = 1000, width: int = 320,
                     vocab: int = 1000) -> list[dict]:
    """The fused kernels against the reference on a ragged problem."""
    rows = []
    for dtype in (jnp.float32, jnp.bfloat16):
        h = jnp.asarray(rng.normal(size=(tokens, width)), dtype)
        w = jnp.asarray(rng.normal(size=(vocab, width)) * 0.05, dtype)
        targets = jnp.asarray(rng.integers(0, vocab, tokens), jnp.int32).at[7].set(-1)
        weights = jnp.asarray(rng.normal(size=tokens), jnp.float32)
        fused = jax.jit(functools.partial(
            _weighted_grads, functools.partial(fused_cross_entropy, backend=backend)))
        ref = jax.jit(functools.partial(_weighted_grads, reference_cross_entropy))
        (token, correct), grads = fused(h, w, targets, weights)
        (ref_token, ref_correct), ref_grads = ref(h, w, targets, weights)
        err = max(rel_err(token, ref_token), *(rel_err(g, r) for g, r in zip(grads, ref_grads)))
        hits = int(jnp.sum(correct != ref_correct))
        rows.append(row(f"fused CE vs reference {jnp.dtype(dtype).name}", err,
                        TOLERANCE[dtype], note=f"{hits} top-1 hits differ"))
    return rows


# The fused kernels' blocks timed at the head's shape (the first is the default).
GPU_CONFIGS = {"64x128 w4": CrossEntropyConfig(),
               "128x128 w8": CrossEntropyConfig(token_block=128, num_warps=8),
               "64x128, grads' tiles 256, w8": CrossEntropyConfig(
                   dh_vocab_block=256, dw_token_block=256, num_warps=8),
               "64x128, XLA grads 4096 tokens": CrossEntropyConfig(xla_grads_tokens=4096)}


def _loss_fn(kind: str, targets, weights, backend: str, config=None):
    """The weighted loss of ``h (B, T, d)``, ``w (V, d)``; ``kind``: ``fused``,
    ``chunked`` (``loss_chunk_tokens`` -1) or ``plain`` (all logits at once)."""
    def loss(h, w):
        if kind == "fused":
            token, _ = fused_cross_entropy(h.reshape(-1, h.shape[-1]), w, targets.reshape(-1),
                                           backend=backend, config=config)
            token = token.reshape(targets.shape)
        else:
            chunk = losses.AUTO if kind == "chunked" else losses.UNCHUNKED
            token, _ = losses.cross_entropy(h, w, targets, chunk)
        return jnp.sum(token * weights)
    return loss


def _timed(fn, h, w) -> tuple[float | None, str]:
    """``(ms, temporaries)`` of a jitted ``fn(h, w)``, or ``(None, why not)``."""
    try:
        temp = fn.lower(h, w).compile().memory_analysis().temp_size_in_bytes / MIB
        return timed_ms(fn, h, w, rounds=5, calls=3), f"{temp:.0f} MiB"
    except Exception as error:  # noqa: BLE001 (a row that says why)
        return None, "out of memory" if is_out_of_memory(str(error)) else str(error)[:80]


def time_fused_loss(rng, tokens: int, width: int, vocab: int, backend: str) -> list[dict]:
    """Forward, and forward with backward, at the head's shape: the fused kernels (each
    config) against the chunked and the plain loss."""
    rows_of = max(1, tokens // 8192)
    shape = (rows_of, tokens // rows_of)
    h = jnp.asarray(rng.normal(size=(*shape, width)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(vocab, width)) * 0.02, jnp.bfloat16)
    targets = jnp.asarray(rng.integers(0, vocab, shape), jnp.int32)
    weights = jnp.ones(shape, jnp.float32) / tokens
    configs = GPU_CONFIGS if backend == "pallas" else {"default": CrossEntropyConfig()}
    kinds = {"chunked": ("chunked", None), "plain": ("plain", None),
             **{f"fused {name}": ("fused", cfg) for name, cfg in configs.items()}}
    label = f"{shape[0]}x{shape[1]} tokens, d {width}, V {vocab}"
    rows = []
    for direction, transform in (("fwd", lambda f: f), ("fwd+bwd", jax.grad)):
        results = {name: _timed(jax.jit(transform(_loss_fn(kind, targets, weights, backend,
                                                           cfg))), h, w)
                   for name, (kind, cfg) in kinds.items()}
        base_ms, base_note = results["chunked"]
        rows.append(row(f"CE {direction} plain vs chunked ({label})", base_ms=base_ms,
                        new_ms=results["plain"][0],
                        note=f"temp: chunked {base_note}, plain {results['plain'][1]}"))
        rows += [row(f"CE {direction} {name} vs chunked", base_ms=base_ms, new_ms=ms,
                     note=f"temp {note}")
                 for name, (ms, note) in results.items() if name.startswith("fused")]
    return rows


# (tokens, width, dtypes checked) of the norm kernels' checks; each timed in bfloat16.
NORM_SHAPES = ((32768, 1024, (jnp.float32, jnp.bfloat16)), (32768, 2048, (jnp.bfloat16,)),
               (1001, 1024, (jnp.float32, jnp.bfloat16)))  # Ragged: 1001 rows, blocks of 8.
NORM_SHAPES_INTERPRETED = ((64, 128, (jnp.float32, jnp.bfloat16)),
                           (37, 64, (jnp.float32, jnp.bfloat16)))


def _with_vjp(fn):
    """``fn(*operands)`` and its gradients for a cotangent given last."""
    def run(*args):
        out, vjp = jax.vjp(fn, *args[:-1])
        return out, vjp(args[-1])
    return run


def _norm_ops(backend: str) -> dict:
    """Name -> ``(kernel, reference, operands)``."""
    return {"norm": (functools.partial(norms.srms_norm, backend=backend),
                     norms_reference.srms_norm, 1),
            "norm-gate": (functools.partial(norms.srms_norm_gate, backend=backend),
                          norms_reference.srms_norm_gate, 2)}


def _norm_configs(width: int) -> dict[str, norms.NormConfig]:
    """The launches timed (the first the default): half and twice its rows, 4 warps."""
    rows = block_rows_for(width, 2**20)
    return {f"{rows} rows": norms.NormConfig(),
            f"{max(1, rows // 2)} rows": norms.NormConfig(block_rows=max(1, rows // 2)),
            f"{rows * 2} rows": norms.NormConfig(block_rows=rows * 2),
            f"{rows} rows, 4 warps": norms.NormConfig(num_warps=4)}


def _norm_times(kernel, reference, args, operands: int, label: str) -> list[dict]:
    """Forward, and forward with backward, of the kernels (each launch of
    ``_norm_configs``) against the reference; the note is the kernels' rate over the
    bytes they must move (each operand read and each result written once: 1 +
    operands passes forward, 1 + 2 * operands backward)."""
    rows = []
    size = args[0].nbytes
    for direction, make, passes in (("fwd", lambda f: f, 1 + operands),
                                    ("fwd+bwd", _with_vjp, 2 + 3 * operands)):
        inputs = args[:operands] if direction == "fwd" else args
        base_ms = timed_ms(jax.jit(make(reference)), *inputs)
        for name, config in _norm_configs(args[0].shape[-1]).items():
            new_ms = timed_ms(jax.jit(make(functools.partial(kernel, config=config))), *inputs)
            rows.append(row(f"{label} {direction} pallas ({name}) vs XLA", base_ms=base_ms,
                            new_ms=new_ms, note=f"kernels {passes * size / new_ms / 1e9:.2f} "
                                                f"TB/s over {passes} passes"))
    return rows


def check_norm_kernels(rng, backend: str, shapes=NORM_SHAPES, timed: bool = True) -> list[dict]:
    """The norm kernels (``model.norm_kernel=pallas``) against the ``jnp`` reference,
    output and gradients of a random cotangent, and (``timed``) their time against
    XLA's in bfloat16."""
    rows = []
    for tokens, width, dtypes in shapes:
        for name, (kernel, reference, operands) in _norm_ops(backend).items():
            for dtype in dtypes:
                args = [jnp.asarray(rng.normal(size=(tokens, width)), dtype)
                        for _ in range(operands + 1)]
                out, grads = jax.jit(_with_vjp(kernel))(*args)
                ref_out, ref_grads = jax.jit(_with_vjp(reference))(*args)
                err = max(rel_err(out, ref_out),
                          *(rel_err(g, r) for g, r in zip(grads, ref_grads, strict=True)))
                label = f"{name} {tokens}x{width} {jnp.dtype(dtype).name}"
                rows.append(row(f"{label} vs reference", err, TOLERANCE[dtype],
                                note="output and gradients"))
                if timed and dtype == jnp.bfloat16:
                    rows += _norm_times(kernel, reference, args, operands, label)
    return rows


def _model_grad(cfg: ModelConfig, ids):
    """``(value, grads)`` of a mean token loss, jitted, and the params."""
    model = create_model(cfg, nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        merged = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
        logits = merged(ids)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 1])

    return jax.jit(jax.value_and_grad(loss)), params


# Each switch against the default, as (label, ModelConfig changes). A scan_unroll of a
# stack's depth or more inlines every layer.
MODEL_SWITCHES = (("remat projections_op_out vs projections", dict(remat="projections_op_out")),
                  ("scan_unroll all vs 1", dict(scan_unroll=1024)),
                  ("norm_kernel pallas vs xla", dict(norm_kernel="pallas")))


def check_model_switches(rng, seq: int, width: int, layers: int,
                         backend: str, timed: bool = True) -> list[dict]:
    """``projections_op_out`` against ``projections``, ``scan_unroll`` against 1,
    ``norm_kernel`` pallas against xla: the same loss and gradients, and the gradient
    step's time.

    Equality is checked in float32 at full matmul precision: in bfloat16 the gradient
    of LRPE's ``theta`` is rounding noise (a sum over every token of position-weighted
    terms that cancel; 2.3x its float32 norm apart at 2 x 4096 tokens, width 512), so
    two bfloat16 programs that fuse differently disagree on it by any amount. The time
    is bfloat16's, the training dtype (``timed=False``: the equality only)."""
    base = ModelConfig(vocab_size=4096, decoder_embed_dim=width, decoder_layers=layers,
                       decoder_attention_heads=4, glu_dim=width * 11 // 4,
                       attention_backend=backend, dtype="bfloat16", remat="projections")
    ids = jnp.asarray(rng.integers(0, base.vocab_size, (2, seq)), jnp.int32)
    baseline_fn, params = _model_grad(base, ids)
    time = (lambda fn: timed_ms(fn, params, rounds=5, calls=3)) if timed else (lambda fn: None)
    base_ms = time(baseline_fn)
    with jax.default_matmul_precision("highest"):
        ref_value, ref_grads = _model_grad(base.replace(dtype="float32"), ids)[0](params)
    rows = []
    for label, change in MODEL_SWITCHES:
        with jax.default_matmul_precision("highest"):
            value, grads = _model_grad(base.replace(dtype="float32", **change), ids)[0](params)
        pairs = zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True)
        err = max(rel_err(value, ref_value),
                  *(rel_err(g, r) for g, r in pairs if np.any(np.asarray(r, np.float32))))
        new_ms = time(_model_grad(base.replace(**change), ids)[0]) if timed else None
        rows.append(row(f"{label} (d {width}, {layers} layers, 2x{seq})", err,
                        TOLERANCE[jnp.float32], base_ms, new_ms,
                        note="equality in float32, time in bfloat16"))
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| check | rel. err | bound | ok | baseline ms | new ms | speed-up | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        err = "" if r["err"] is None else f"{r['err']:.2e}"
        tol = "" if r["tol"] is None else f"{r['tol']:.0e}"
        ok = "" if r["err"] is None else ("yes" if r["err"] <= r["tol"] else "**NO**")
        base = "" if r["base_ms"] is None else f"{r['base_ms']:.2f}"
        new = "" if r["new_ms"] is None else f"{r['new_ms']:.2f}"
        speed = (f"{r['base_ms'] / r['new_ms']:.2f}x" if r["base_ms"] and r["new_ms"] else "")
        lines.append(f"| {r['check']} | {err} | {tol} | {ok} | {base} | {new} | {speed} | "
                     f"{r['note']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32768, help="tokens of the loss timing")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=64000)
    parser.add_argument("--rows", type=int, default=4096, help="tokens per row, model checks")
    parser.add_argument("--model-width", type=int, default=512)
    parser.add_argument("--model-layers", type=int, default=8)
    parser.add_argument("--interpret", action="store_true",
                        help="the kernels interpreted (a dry run on CPU, with small sizes)")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {', '.join(PARTS)}")
    parser.add_argument("--untimed", action="store_true",
                        help="the norm kernels' checks without their timings (the GPU shared)")
    parser.add_argument("--out", type=Path, default=None,
                        help="a folder for glue_check.md (the final table)")
    args = parser.parse_args()
    parts = [p for p in args.only.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--only {args.only!r}: expected comma-separated parts of "
                     f"{', '.join(PARTS)}")
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    rng = np.random.default_rng(0)
    backend = "interpret" if args.interpret else "pallas"
    rows = []
    if "loss_kernel" in parts:
        small = dict(tokens=100, width=40, vocab=300) if args.interpret else {}
        rows += check_fused_loss(rng, backend, **small)
        print(format_table(rows), flush=True)
        timed = time_fused_loss(rng, args.tokens, args.width, args.vocab, backend)
        print(format_table(timed), flush=True)
        rows += timed
    if "norm_kernel" in parts:
        norm_rows = check_norm_kernels(
            rng, backend, NORM_SHAPES_INTERPRETED if args.interpret else NORM_SHAPES,
            timed=not (args.interpret or args.untimed))
        print(format_table(norm_rows), flush=True)
        rows += norm_rows
    if "model_switches" in parts:
        rows += check_model_switches(rng, args.rows, args.model_width, args.model_layers,
                                     backend)
    table = format_table(rows)
    print("\n" + table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "glue_check.md").write_text(
            f"{jax.devices()[0].device_kind}, jax {jax.__version__}\n\n{table}\n")


if __name__ == "__main__":
    main()
