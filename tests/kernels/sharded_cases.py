"""The op over a mesh of 8 fake CPU devices, in every mode, against the unsharded op:
run as ``python -m tests.kernels.sharded_cases BACKEND`` (test_partitioning.py starts
it with 8 devices); prints one JSON line per case: the relative errors of o, the final
state and every gradient, and the largest array any collective of the compiled step
moves."""
from __future__ import annotations

import contextlib
import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from pallas_kernels import ShardAxes, lightning_attention
from tests.kernels.attention_inputs import attention_inputs
from tests.tolerances import rel_err

MESH_AXES = ("data", "ctx", "tensor")
BATCH, SEQ, HEADS, DIM = 4, 256, 4, 8
COLLECTIVE = re.compile(r"= (.*?) (all-gather|all-reduce|reduce-scatter|all-to-all|"
                        r"collective-permute|collective-broadcast)(?:-start)?\(")

# (name, mesh shape, q's spec over (batch, seq, heads), mode, options)
CASES = [
    ("auto all three", (2, 2, 2), ("data", "ctx", "tensor"), "auto", {}),
    ("auto seq over 4", (2, 2, 2), (None, ("data", "ctx"), None), "auto", {}),
    # Interpreted kernels only (the xla backend runs the same partition rules above):
    ("auto seq", (2, 2, 2), (None, "ctx", None), "auto", {"decay_grad": False}),
    ("plain jit, no mesh set", (2, 2, 2), ("data", "ctx", "tensor"), "jit", {}),
    ("explicit batch and heads", (2, 2, 2), (("data", "ctx"), None, "tensor"), "explicit", {}),
    ("explicit seq, ragged shards", (1, 2, 4), ("data", "ctx", None), "explicit",
     {"seq": 48}),
    ("shard_map all three", (2, 2, 2), ("data", "ctx", "tensor"), "shard_map", {}),
    ("shard_map seq over 8", (2, 2, 2), (None, ("data", "ctx", "tensor"), None), "shard_map",
     {"decay_grad": False}),
    ("shard_axes all three", (2, 2, 2), ("data", "ctx", "tensor"), "shard_axes",
     {"decay_grad": False}),
    ("shard_axes seq, no segments or state", (2, 2, 2), (None, "ctx", None), "shard_axes",
     {"segments": False, "initial_state": False}),
    ("explicit seq bf16", (2, 2, 2), ("data", "ctx", "tensor"), "explicit",
     {"dtype": "bfloat16"}),
    # Only o differentiated (a model's use): the final state's cotangent a symbolic zero.
    ("shard_map seq, final state not differentiated", (2, 2, 2),
     (("data", "tensor"), "ctx", None), "shard_map", {"final_grad": False}),
]


# The kernels interpreted: the Auto modes and the caller's shard_map. jax 0.10's Pallas
# interpreter cannot run kernels inside a shard_map with manual-axis types (check_vma),
# which the Explicit and shard_axes modes use; those run here with the xla backend, and
# with the real kernels on the GPU (benchmarks/kernel/gpu_check.py).
INTERPRET_CASES = ("auto seq", "auto all three", "plain jit, no mesh set",
                   "shard_map all three", "shard_map seq, final state not differentiated")


XLA_SKIPS = ("auto seq", "plain jit, no mesh set",
             "shard_map seq, final state not differentiated")  # the model tests run it


def cases(backend: str) -> list:
    if backend == "interpret":
        return [c for c in CASES if c[0] in INTERPRET_CASES]
    return [c for c in CASES if c[0] not in XLA_SKIPS]


def largest_collective(compiled_text: str) -> int:
    """Elements of the largest array that any collective of the program moves."""
    largest = 0
    for types, _ in COLLECTIVE.findall(compiled_text):
        for dims in re.findall(r"\w+\[([\d,]*)\]", types):
            largest = max(largest, int(np.prod([int(d) for d in dims.split(",") if d])))
    return largest


REFERENCES: dict = {}


def state_bound(mesh, spec) -> int:
    """Elements of the context gather: ``n`` shards' ``(B, H, dk, dv)`` local states and
    the final one (its backward sums the states at the ``n + 1`` shard boundaries)."""
    size = lambda entry: int(np.prod([mesh.shape[a] for a in ShardAxes(entry).batch]))
    b, t, h = (size(e) for e in spec)
    return (t + 1) * (BATCH // b) * (HEADS // h) * DIM * DIM


def run_case(backend: str, mesh_shape, spec, mode: str, options: dict) -> dict:
    seq, dtype = options.get("seq", SEQ), jnp.dtype(options.get("dtype", "float32"))
    decay_grad, final_grad = options.get("decay_grad", True), options.get("final_grad", True)
    rng = np.random.default_rng(seq)
    q, k, v, decay, kwargs = attention_inputs(
        rng, BATCH, seq, HEADS, DIM, DIM, decay=[0.05, 0.3, 1.0, 0.0], dtype=dtype,
        segments=options.get("segments", True),
        initial_state=options.get("initial_state", True))
    do = jnp.asarray(rng.standard_normal((BATCH, seq, HEADS, DIM)), dtype)
    dfinal = jnp.asarray(rng.standard_normal((BATCH, HEADS, DIM, DIM)), jnp.float32)
    segments, s0 = kwargs.get("segment_ids"), kwargs.get("initial_state")
    b, t, h = spec

    def op(q, k, v, decay, s0, segments, **extra):
        return lightning_attention(q, k, v, decay, segment_ids=segments, initial_state=s0,
                                   return_final_state=True, chunk_size=16, backend=backend,
                                   **extra)

    argnums = (0, 1, 2, 3) if decay_grad else (0, 1, 2)
    argnums += (4,) if s0 is not None else ()

    def outputs_and_grads(op_fn):
        """``((o, final), gradients of <o, do> + <final, dfinal>)`` in one pass (without
        the second term if not ``final_grad``)."""
        def fn(*args):
            differentiated = [args[i] for i in argnums]

            def of(*diff):
                full = list(args)
                for i, x in zip(argnums, diff):
                    full[i] = x
                o, final = op_fn(*full)
                return ((o, final), None) if final_grad else (o, final)
            out, vjp, aux = jax.vjp(of, *differentiated, has_aux=True)
            return ((out, vjp((do, dfinal))) if final_grad else ((out, aux), vjp(do)))
        return jax.jit(fn)

    key = (seq, str(dtype), decay_grad, final_grad, segments is None, s0 is None)
    if key not in REFERENCES:  # one unsharded run per kind of inputs
        REFERENCES[key] = outputs_and_grads(op)(q, k, v, decay, s0, segments)
    reference = REFERENCES[key]
    kind = AxisType.Explicit if mode == "explicit" else AxisType.Auto
    mesh = jax.make_mesh(mesh_shape, MESH_AXES, axis_types=(kind,) * 3)
    tokens, state, rows = P(b, t, h, None), P(b, h, None, None), P(b, t)
    op_fn = op
    if mode == "shard_map":
        def local(q, k, v, decay, s0, segments):
            return op(q, k, v, decay, s0, segments, context_axis=t)
        in_specs = (tokens,) * 3 + (P(h), None if s0 is None else state,
                                    None if segments is None else rows)
        op_fn = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=(tokens, state),
                              check_vma=backend != "interpret")
    elif mode == "shard_axes":
        op_fn = lambda *a: op(*a, shard_axes=ShardAxes(b, t, h))
    put = lambda x, s: None if x is None else jax.device_put(x, NamedSharding(mesh, s))
    args = (put(q, tokens), put(k, tokens), put(v, tokens), put(decay, P(h)), put(s0, state),
            put(segments, rows))
    with contextlib.nullcontext() if mode == "jit" else jax.set_mesh(mesh):
        step = outputs_and_grads(op_fn)
        result = step(*args)
        compiled = step.lower(*args).compile().as_text()
    names = ["o", "final"] + ["dq", "dk", "dv", "ddecay", "ds0"][:3] + (
        ["ddecay"] if decay_grad else []) + (["ds0"] if s0 is not None else [])
    flat, flat_ref = jax.tree.leaves(result), jax.tree.leaves(reference)
    errors = {n: float(rel_err(x, r)) for n, x, r in zip(names, flat, flat_ref)}
    return {"errors": errors, "dtype": str(dtype),
            "largest_collective": largest_collective(compiled),
            "state_bound": state_bound(mesh, spec),
            "activation": BATCH * seq * HEADS * DIM}  # what an all-gather of q would move


def main(backend: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    for name, mesh_shape, spec, mode, options in cases(backend):
        print("CASE", json.dumps({"name": name, **run_case(backend, mesh_shape, spec, mode,
                                                            options)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
