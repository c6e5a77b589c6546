"""Correctness of the real kernels (Triton and Mosaic GPU lowerings) on a GPU, at real sizes.

Every case runs the pallas backend against the xla backend in float32 with
``precision=HIGHEST`` (exact float32 matmuls, not TF32): forward, final state and the
gradients of q, k, v, decay and the initial state, with segments, an initial state,
per-head decays from 0 to 8, head sizes 64, 128, 256, dk = 2·dv, one long row (sequence
splits, with the state-only passes in finer splits of their own) and many rows (one
split); decays learned (differentiated) and fixed (TNL's: the backward skips the decay
gradient). The ``decode`` cases check the decode step's kernel the same way (decays 0
to +inf, padded head dims). Exits non-zero on any failure.

    python -m benchmarks.kernel.gpu_check
    python -m benchmarks.kernel.gpu_check --shard 0/4 & ... --shard 3/4   # four processes
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import lightning_attention, lightning_attention_step

F32_TOL, BF16_TOL = 1e-4, 1e-2
NAMES = ("o", "final_state", "dq", "dk", "dv", "ddecay", "dinitial_state")


def rel_err(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def packed_segments(rng, batch: int, seq: int, docs: int) -> jax.Array:
    cuts = np.sort(rng.choice(np.arange(1, seq), size=(batch, docs - 1), replace=True), axis=1)
    seg = np.zeros((batch, seq), np.int32)
    for b in range(batch):
        for c in cuts[b]:
            seg[b, c:] += 1
    return jnp.asarray(seg)


def run_case(rng, *, batch, seq, heads, dk, dv, dtype, segments=True,
             initial_state=True, learned_decay=True) -> dict[str, float]:
    """Relative errors by name; a fixed decay has no ``ddecay``."""
    scale = dk ** -0.5
    q, k = (jnp.asarray(rng.standard_normal((batch, seq, heads, dk)) * scale, dtype)
            for _ in range(2))
    v = jnp.asarray(rng.standard_normal((batch, seq, heads, dv)), dtype)
    decay = jnp.linspace(0.0, 8.0, heads, dtype=jnp.float32)
    s0 = jnp.asarray(rng.standard_normal((batch, heads, dk, dv)), jnp.float32)
    if not initial_state:
        s0 = jnp.zeros_like(s0)
    seg = packed_segments(rng, batch, seq, docs=4) if segments else None
    do = jnp.asarray(rng.standard_normal(v.shape), dtype)
    dfinal = jnp.asarray(rng.standard_normal(s0.shape), jnp.float32)

    def outputs_and_grads(backend, q, k, v, decay, s0):
        def op(q, k, v, s0, *learned):
            return lightning_attention(q, k, v, *(learned or (decay,)), segment_ids=seg,
                                       initial_state=s0, return_final_state=True,
                                       backend=backend)
        learned = (decay,) if learned_decay else ()
        (o, final), vjp = jax.vjp(op, q, k, v, s0, *learned)
        dq, dk, dv, ds0, *ddecay = vjp((do.astype(o.dtype), dfinal))
        return (o, final, dq, dk, dv, ddecay[0] if ddecay else None, ds0)

    ours = jax.jit(lambda *a: outputs_and_grads("pallas", *a))(q, k, v, decay, s0)
    as32 = lambda x: x.astype(jnp.float32)
    with jax.default_matmul_precision("highest"):
        ref = jax.jit(lambda *a: outputs_and_grads("xla", *a))(
            as32(q), as32(k), as32(v), decay, s0)
    return {name: rel_err(a, b) for name, a, b in zip(NAMES, ours, ref) if a is not None}


def run_decode_case(rng, *, batch, heads, dk, dv, dtype, **unused) -> dict[str, float]:
    """The decode step's kernel (``lightning_attention_step``, pallas) against xla: the
    output, the new state, and the gradients (the kernel's VJP is the xla step's)."""
    q, k = (jnp.asarray(rng.standard_normal((batch, heads, dk)) * dk ** -0.5, dtype)
            for _ in range(2))
    v = jnp.asarray(rng.standard_normal((batch, heads, dv)), dtype)
    decay = jnp.linspace(0.0, 8.0, heads, dtype=jnp.float32).at[-1].set(jnp.inf)
    state = jnp.asarray(rng.standard_normal((batch, heads, dk, dv)), jnp.float32)
    do = jnp.asarray(rng.standard_normal(v.shape), dtype)
    dstate = jnp.asarray(rng.standard_normal(state.shape), jnp.float32)

    def outputs_and_grads(backend, q, k, v, state):
        (o, new), vjp = jax.vjp(lambda q, k, v, s: lightning_attention_step(
            q, k, v, decay, s, backend=backend), q, k, v, state)
        return (o, new, *vjp((do.astype(o.dtype), dstate)))

    ours = jax.jit(lambda *a: outputs_and_grads("pallas", *a))(q, k, v, state)
    as32 = lambda x: x.astype(jnp.float32)
    with jax.default_matmul_precision("highest"):
        ref = jax.jit(lambda *a: outputs_and_grads("xla", *a))(as32(q), as32(k), as32(v), state)
    names = ("o", "final_state", "dq", "dk", "dv", "dinitial_state")
    return {name: rel_err(a, b) for name, a, b in zip(names, ours, ref)}


class Case(NamedTuple):
    label: str
    batch: int
    seq: int
    heads: int
    dk: int
    dv: int
    dtype: object
    segments: bool
    initial_state: bool = True
    learned_decay: bool = True


CASES = [Case(*row) for row in [
    ("d64 f32", 2, 8192, 16, 64, 64, jnp.float32, True),
    ("d128 f32", 2, 8192, 16, 128, 128, jnp.float32, True),
    ("d256 f32", 2, 8192, 16, 256, 256, jnp.float32, True),
    ("dk256/dv128 f32", 2, 8192, 16, 256, 128, jnp.float32, True),
    ("d128 f32 no segments", 2, 8192, 16, 128, 128, jnp.float32, False),
    ("d128 f32 ragged T", 2, 5000, 16, 128, 128, jnp.float32, True),
    ("d128 f32 1x32K splits", 1, 32768, 16, 128, 128, jnp.float32, True),
    ("d128 f32 16x1K one split", 16, 1024, 16, 128, 128, jnp.float32, True),
    # bf16 on Hopper runs the Mosaic GPU walks (tuning.py's Hopper table); float32 runs Triton.
    ("d128 bf16", 2, 8192, 16, 128, 128, jnp.bfloat16, True),
    ("dk256/dv128 bf16", 2, 8192, 16, 256, 128, jnp.bfloat16, True),
    ("d256 bf16", 2, 8192, 16, 256, 256, jnp.bfloat16, True),
    ("d64 bf16 no initial state", 2, 8192, 16, 64, 64, jnp.bfloat16, True, False),
    ("d128 bf16 1x32K splits no initial state", 1, 32768, 16, 128, 128, jnp.bfloat16, True, False),
    ("dk256/dv128 bf16 1x32K splits", 1, 32768, 16, 256, 128, jnp.bfloat16, True),
    ("d256 bf16 1x32K splits", 1, 32768, 16, 256, 256, jnp.bfloat16, True),
    # 2 splits, each 2 splits of the state-only passes; the dS-only pass walks the first
    # split only for the initial state's gradient, with a fixed decay.
    ("d128 bf16 4x8K finer state splits", 4, 8192, 16, 128, 128, jnp.bfloat16, True),
    ("d128 bf16 4x8K fixed decay", 4, 8192, 16, 128, 128, jnp.bfloat16, True, True, False),
    # The decode step's kernel (seq: unused): state read and written once per step.
    ("decode d128 f32 batch 64", 64, 1, 16, 128, 128, jnp.float32, False),
    ("decode dk256/dv128 bf16 batch 8", 8, 1, 16, 256, 128, jnp.bfloat16, False),
    ("decode d64 bf16 batch 1", 1, 1, 16, 64, 64, jnp.bfloat16, False),
    ("decode d80 f32 padded batch 3", 3, 1, 16, 80, 80, jnp.float32, False),
]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run cases whose label contains this")
    parser.add_argument("--shard", default="0/1",
                        help="i/n: every n-th case from the i-th, to spread cases over processes")
    args = parser.parse_args()
    shard, shards = map(int, args.shard.split("/"))
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    rng = np.random.default_rng(0)
    failures = 0
    header = f"{'case':28s} " + " ".join(f"{n:>14s}" for n in NAMES) + "  result"
    print(header)
    for index, case in enumerate(CASES):
        label = case.label
        if args.only not in label or index % shards != shard:
            continue
        tol = F32_TOL if case.dtype == jnp.float32 else BF16_TOL
        start = time.perf_counter()
        try:
            params = case._asdict()
            del params["label"]
            errors = (run_decode_case if label.startswith("decode") else run_case)(rng, **params)
        except Exception as e:  # report every case, then fail
            failures += 1
            print(f"{label:28s} ERROR {type(e).__name__}: {str(e)[:400]}")
            continue
        ok = all(np.isfinite(e) and e <= tol for e in errors.values())
        failures += not ok
        cells = " ".join(f"{errors[n]:14.2e}" if n in errors else f"{'-':>14s}" for n in NAMES)
        print(f"{label:28s} {cells}  {'ok' if ok else 'FAIL'} (tol {tol:g}, "
              f"{time.perf_counter() - start:.1f}s)", flush=True)
    print(f"gpu_check: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
