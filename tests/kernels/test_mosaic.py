"""The Mosaic GPU walks (mosaic/) in Mosaic GPU's interpreter, through the op: forward
and backward against the quadratic reference, bf16.

Op by op, not under jit: under jit XLA may run independent interpreted kernels (dQ and
dK) at once, whose simulated threads then wait at barriers on each other in io_callbacks
and, on this 2-core machine, now and then deadlock."""
import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import KernelConfig, Launch, lightning_attention
from pallas_kernels.lightning import tuning
from pallas_kernels.lightning.launch import WALKS
from tests.kernels.attention_inputs import (
    attention_inputs,
    quadratic_reference,
    random_segments,
)
from tests.tolerances import BF16_TOL, rel_err



def mosaic_config(chunk: int = 64, block: int = 128, **splits) -> KernelConfig:
    """Every walk in Mosaic GPU: one compute warpgroup per 64 columns of ``block`` (the
    tables use 128: two compute warpgroups)."""
    return KernelConfig(**{walk: Launch(block, chunk=chunk, lowering="mosaic")
                           for walk in WALKS}, **splits)


def interpret(q, k, v, decay, config, **kwargs):
    return lightning_attention(q, k, v, decay, return_final_state=True, backend="interpret",
                               kernel_config=config, **kwargs)


def reference_f32(q, k, v, decay, **kwargs):
    return quadratic_reference(q, k, v, decay, dtype=jnp.float32, **kwargs)


def test_mosaic_walks_with_a_fixed_decay(rng):
    """Every walk in Mosaic GPU with the decay fixed (TNL's), bf16 against the bf16 bound:
    ragged T (2 chunks, the last short), packed documents, an initial state, two heads
    of their own decays; two sequence splits (the state-only pass before the second,
    the dS-only pass walking both, for the initial state). One compute warpgroup per
    walk: the walk's code does not depend on its roles, and
    test_mosaic_walks_in_exact_arithmetic runs two. (Finer state splits and padded
    splits are the same layout code in both lowerings: test_kernels.py.)"""
    config = mosaic_config(chunks_per_split=1)
    q, k, v, decay, kw = attention_inputs(rng, 1, 100, 2, 64, 64, decay=[0.05, 1.5],
                                          dtype=jnp.bfloat16, segments=True,
                                          initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.bfloat16)

    def loss(fn):
        def f(q, k, v, s0):
            o, final = fn(q, k, v, decay, segment_ids=kw["segment_ids"], initial_state=s0)
            return jnp.sum(o.astype(jnp.float32) * do) + jnp.sum(final), (o, final)
        return f

    ours = lambda *args, **kwargs: interpret(*args, config, **kwargs)
    args = (q, k, v, kw["initial_state"])
    grads, (o, final) = jax.grad(loss(ours), argnums=range(4), has_aux=True)(*args)
    grads_ref, (o_ref, final_ref) = jax.grad(loss(reference_f32), argnums=range(4),
                                             has_aux=True)(*args)
    assert o.dtype == jnp.bfloat16
    assert rel_err(o, o_ref) < BF16_TOL and rel_err(final, final_ref) < BF16_TOL
    for name, g, g_ref in zip(["q", "k", "v", "initial_state"], grads, grads_ref):
        assert rel_err(g, g_ref) < BF16_TOL, name


def test_mosaic_walks_in_exact_arithmetic(rng):
    """γ = 0 with sparse ternary rows and an integer initial state: every product is exact
    in bf16 with float32 sums, so the output, the final state and every gradient,
    the decay's included, must match the reference: the decay-gradient partials of dQ
    and dK walks in two programs of 64 columns each (positions, split-anchored boundary
    terms, segments), the dS the dK walk carries across two sequence splits (the dS-only
    pass skipping the first), ragged T. Boundary terms over splits of many chunks:
    test_bf16_decay_gradient_holds_the_bf16_bound. One compute warpgroup per program
    (fewer simulated threads in the interpreter); gpu_check runs two on the GPU."""
    config = mosaic_config(chunks_per_split=1, block=64)
    batch, seq, heads, dk, dv = 1, 100, 1, 128, 64

    def ternary(width):
        values = rng.choice([-1.0, 0.0, 1.0], size=(batch, seq, heads, width), p=[0.05, 0.9, 0.05])
        return jnp.asarray(values, jnp.bfloat16)

    q, k, v, do = ternary(dk), ternary(dk), ternary(dv), ternary(dv)
    s0 = jnp.asarray(rng.integers(-2, 3, (batch, heads, dk, dv)), jnp.float32)
    segment_ids = jnp.asarray(random_segments(rng, batch, seq))

    def loss(fn):
        def f(q, k, v, decay, s0):
            o, final = fn(q, k, v, decay, segment_ids=segment_ids, initial_state=s0)
            return jnp.sum(o.astype(jnp.float32) * do) + jnp.sum(final), (o, final)
        return f

    ours = lambda *args, **kwargs: interpret(*args, config, **kwargs)
    args = (q, k, v, jnp.zeros((heads,), jnp.float32), s0)
    grads, outs = jax.grad(loss(ours), argnums=range(5), has_aux=True)(*args)
    grads_ref, outs_ref = jax.grad(loss(reference_f32), argnums=range(5), has_aux=True)(*args)
    names = ["o", "final", "q", "k", "v", "decay", "initial_state"]
    for name, x, x_ref in zip(names, (*outs, *grads), (*outs_ref, *grads_ref)):
        assert rel_err(x, x_ref) < 1e-6, name


# Triton's walks in the interpreter; Mosaic's hold the same bound in gpu_check.py's bf16
# decay-gradient cases on the GPU (34 s interpreted here, over the suite's budget).
@pytest.mark.parametrize("lowering", ["triton"])
def test_bf16_decay_gradient_holds_the_bf16_bound(rng, lowering):
    """No decay over 10 chunks with an initial state, where the position-weighted sums
    cancel most: the decay gradient within 1e-2 needs the dQ and dK walks to hold the
    state and its updates at float32 precision (hi/lo 16-bit pairs, chunk_math.split16;
    with one rounding it is 120% off here, and within the bound at 6 chunks, so the
    test keeps 10) and to cancel against the dS they carry. One split: the cancelling
    sums span the whole row."""
    config = tuning.kernel_config(64, 64, 64, itemsize=2, mosaic=lowering == "mosaic")
    assert {x.lowering for x in config.launches} == {lowering}
    q, k, v, decay, kw = attention_inputs(rng, 1, 640, 1, 64, 64, decay=[0.0],
                                          dtype=jnp.bfloat16, initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.bfloat16)

    def loss(attention):
        return lambda decay: jnp.sum(attention(q, k, v, decay,
                                               initial_state=kw["initial_state"])[0]
                                     .astype(jnp.float32) * do)

    ours = lambda *args, **kwargs: interpret(*args, config, **kwargs)
    g = jax.grad(loss(ours))(decay)
    g_ref = jax.grad(loss(reference_f32))(decay)
    assert rel_err(g, g_ref) < BF16_TOL
