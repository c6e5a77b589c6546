"""One GPU's proxy for the sequence-split op's extra time (issue 31: <= 1.2x one device's
share on two GPUs): fwd+bwd of one device's shard, (1, 65536) tokens at tnl-385m's heads
(8 x 128), bf16, fixed decays, three ways:

- ``plain``: the op alone, one device's share with nothing to combine;
- ``lasp2``: the sequence-split op on a one-device mesh (``shard_axes`` seq): every
  step of LASP-2's order runs (the state-only pass, the gather, a ``psum`` over one
  device, the boundary states, the op from the entering state reusing the pass's split
  states; in the backward the dS-only pass, the ``psum`` and the op's backward reusing
  its split dS), only the transfer is missing;
- ``old``: the order before (the op from a zero state, the gather, then
  ``λ^(t+1) q_t E`` added by an XLA product over the shard, differentiated by JAX),
  kept here to be measured beside it.

Also the two state passes alone (forward only). Each case is checked against
``plain``'s gradients (relative error). Run from the repository root:

    source benchmarks/common/device_setup.sh
    python -m benchmarks.scaling.context_proxy --out $OUT [--profile]

Time it alone on the GPU: a process beside it shares the GPU's time slices, and the
state passes' short calls (about 0.1 ms of kernels) suffer most.

``--small`` is a CPU smoke test (the ``xla`` backend; ``--backend interpret`` runs the
kernels interpreted, minutes).
"""
from __future__ import annotations

import argparse
import functools
import json
import os

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, PartitionSpec as P

from benchmarks.common.profiling import format_table, kernel_times
from benchmarks.common.timing import fwd_bwd, timed_ms
from benchmarks.scaling.scaling_bench import op_inputs, rel_err
from pallas_kernels import ShardAxes, lightning_attention
from pallas_kernels.lightning import context_parallel, ops
from pallas_kernels.lightning.chunk_math import weighted


def old_order(attend, q, k, v, decay, axis: str) -> jax.Array:
    """The sequence-split op's output as computed before LASP-2's order (one document
    per row, no initial state): the op from a zero state plus the XLA product of the
    entering state, ``λ^(t+1) q_t E_r``."""
    batch, seq = q.shape[:2]
    o_own, own_state = attend(q, k, v, decay, None, None)
    zeros = jnp.zeros((batch,), jnp.int32)
    own_states, *facts = context_parallel.gather_shards(
        (own_state.astype(jnp.float32), zeros, zeros, zeros + 1), axis)
    states, _ = context_parallel.boundary_states(own_states, *facts[:2],
                                                 facts[2].astype(bool), decay, seq, None)
    entering = states[lax.axis_index(axis)]
    steps = jnp.arange(1, seq + 1, dtype=jnp.float32)
    weights = jnp.exp(-steps[:, None] * decay[None, :])[None, :, :, None]  # (1, L, H, 1)
    if jax.default_backend() == "cpu":  # XLA:CPU has no 16-bit products to float32
        q, entering = q.astype(jnp.float32), entering.astype(jnp.float32)
    product = jnp.einsum("bthk,bhkv->bthv", q, entering.astype(q.dtype),
                         preferred_element_type=jnp.float32)
    return (o_own.astype(jnp.float32) + weighted(product, weights)).astype(o_own.dtype)


def _profiled(name: str, fn, args_, profile: bool) -> float | None:
    """With ``profile``: the case's device kernel time per call (ms, GPU 0's streams),
    its kernels printed; a wall-clock time of a short call can hide other work."""
    if not profile:
        return None
    times = kernel_times(lambda: fn(*args_), repeats=5)
    print(f"## {name}\n{format_table(times, top=15)}", flush=True)
    return times["per_call_ms"]


def proxy_rows(args) -> list[dict]:
    """The three fwd+bwd cases and the two state passes on one device."""
    decay = jnp.arange(1, args.heads + 1, dtype=jnp.float32) / args.heads
    typed = args.backend != "interpret"
    mesh = jax.make_mesh((1,), ("x",), axis_types=(AxisType.Auto,),
                         devices=jax.devices()[:1])
    tokens = P(None, "x", None, None)
    attend = ops.local_op(chunk_size=None, backend=args.backend, kernel_config=None)

    def plain(q, k, v):
        return lightning_attention(q, k, v, decay, backend=args.backend)

    def lasp2(q, k, v):
        return lightning_attention(q, k, v, decay, backend=args.backend,
                                   shard_axes=ShardAxes(seq="x"))

    old = jax.shard_map(functools.partial(old_order, attend, decay=decay, axis="x"),
                        mesh=mesh, in_specs=(tokens,) * 3, out_specs=tokens,
                        check_vma=typed)
    args_ = op_inputs(1, args.seq, args.heads, args.dim)
    time = functools.partial(timed_ms, rounds=args.rounds)
    rows = []
    with jax.set_mesh(mesh):
        reference = jax.jit(fwd_bwd(plain))(*args_)
        plain_ms = None
        for name, fn in (("plain", plain), ("lasp2", lasp2), ("old", old)):
            step = jax.jit(fwd_bwd(fn))
            ms = time(step, *args_)
            plain_ms = plain_ms or ms
            rows.append({"case": name, "fwd_bwd_ms": ms, "x_plain": ms / plain_ms,
                         "rel_err_vs_plain": rel_err(step(*args_), reference),
                         "kernel_ms": _profiled(name, step, args_, args.profile)})
            print(json.dumps(rows[-1]), flush=True)
        state_passes = (
            ("state-only pass", lambda q, k, v, do: attend.state_of(q, k, v, decay, None)),
            ("dS-only pass",
             lambda q, k, v, do: attend.dstate_of(q, k, v, do, decay, None)))
        for name, state_pass in state_passes:
            step = jax.jit(state_pass)
            ms = time(step, *args_)
            rows.append({"case": name, "fwd_bwd_ms": ms, "x_plain": ms / plain_ms,
                         "rel_err_vs_plain": None,
                         "kernel_ms": _profiled(name, step, args_, args.profile)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def proxy_table(rows: list[dict], args) -> str:
    lines = [f"(1, {args.seq}) tokens, {args.heads} heads x {args.dim}, bf16, "
             f"backend {args.backend or 'default'}", "",
             "| case | ms | x plain | kernel ms | rel. err vs plain |", "|---|---|---|---|---|"]
    for r in rows:
        err, kernel = r["rel_err_vs_plain"], r["kernel_ms"]
        lines.append(f"| {r['case']} | {r['fwd_bwd_ms']:.3f} | {r['x_plain']:.3f} | "
                     f"{'-' if kernel is None else f'{kernel:.3f}'} | "
                     f"{'-' if err is None else f'{err:.1e}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--seq", type=int, default=65536)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--small", action="store_true",
                        help="CPU smoke test: tiny shapes, one round, the xla backend")
    parser.add_argument("--profile", action="store_true",
                        help="also each case's device kernel time (jax.profiler) and kernels")
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()
    if args.small:
        args.seq, args.heads, args.dim, args.rounds = 256, 2, 64, 1
        args.backend = args.backend or "xla"
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    rows = proxy_rows(args)
    text = proxy_table(rows, args)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "context_proxy.json"), "w") as f:
            json.dump(rows, f, indent=1)
        with open(os.path.join(args.out, "context_proxy.md"), "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
