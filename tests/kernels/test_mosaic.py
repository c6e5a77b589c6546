"""The Mosaic GPU walks (mosaic/) in Mosaic GPU's interpreter, through the op: forward
and backward against the quadratic reference, bf16."""
import dataclasses

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
    rel_err,
)

BF16_TOL = 1e-2


def mosaic_config(chunk: int = 64, block: int = 128, **splits) -> KernelConfig:
    """Every walk in Mosaic GPU: one compute warpgroup per 64 columns of ``block``."""
    return KernelConfig(**{walk: Launch(block, chunk=chunk, lowering="mosaic")
                           for walk in WALKS}, **splits)


def interpret(q, k, v, decay, config, **kwargs):
    return lightning_attention(q, k, v, decay, return_final_state=True, backend="interpret",
                               kernel_config=config, **kwargs)


def reference_f32(q, k, v, decay, **kwargs):
    return quadratic_reference(q, k, v, decay, dtype=jnp.float32, **kwargs)


@pytest.mark.parametrize("dk,dv,chunks_per_split,factor", [(64, 128, None, None),
                                                          (128, 64, 2, 2)])
def test_mosaic_walks_through_the_op(rng, dk, dv, chunks_per_split, factor):
    """Every walk in Mosaic GPU, bf16: ragged T (5 chunks, the last short), packed
    documents, an initial state; one and two compute warpgroups (64 and 128 columns);
    one sequence split and several (state-only passes in splits of one chunk, the last
    all padding, sums across splits, output passes)."""
    config = mosaic_config(chunks_per_split=chunks_per_split, state_split_factor=factor)
    q, k, v, decay, kw = attention_inputs(rng, 1, 300, 2, dk, dv, decay=[0.05, 1.5],
                                          dtype=jnp.bfloat16, segments=True,
                                          initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.bfloat16)

    def loss(fn):
        def f(q, k, v, decay, s0):
            o, final = fn(q, k, v, decay, segment_ids=kw["segment_ids"], initial_state=s0)
            return jnp.sum(o.astype(jnp.float32) * do) + jnp.sum(final), (o, final)
        return f

    ours = lambda *args, **kwargs: interpret(*args, config, **kwargs)
    args = (q, k, v, decay, kw["initial_state"])
    grads, (o, final) = jax.grad(loss(ours), argnums=range(5), has_aux=True)(*args)
    grads_ref, (o_ref, final_ref) = jax.grad(loss(reference_f32), argnums=range(5),
                                             has_aux=True)(*args)
    assert o.dtype == jnp.bfloat16
    assert rel_err(o, o_ref) < BF16_TOL and rel_err(final, final_ref) < BF16_TOL
    for name, g, g_ref in zip(["q", "k", "v", "decay", "initial_state"], grads, grads_ref):
        assert rel_err(g, g_ref) < BF16_TOL, name


@pytest.mark.parametrize("dk,dv,chunks_per_split", [(64, 128, None), (128, 64, 2)])
def test_mosaic_decay_gradient_in_exact_arithmetic(rng, dk, dv, chunks_per_split):
    """γ = 0 with sparse ternary rows and an integer initial state: every product is exact
    in bf16 with float32 sums, so the decay-gradient partials of the dQ and dK walks
    (positions, split-anchored boundary terms, segments) must match the reference."""
    config = mosaic_config(chunks_per_split=chunks_per_split)
    batch, seq, heads = 1, 300, 2

    def ternary(width):
        values = rng.choice([-1.0, 0.0, 1.0], size=(batch, seq, heads, width), p=[0.05, 0.9, 0.05])
        return jnp.asarray(values, jnp.bfloat16)

    q, k, v, do = ternary(dk), ternary(dk), ternary(dv), ternary(dv)
    s0 = jnp.asarray(rng.integers(-2, 3, (batch, heads, dk, dv)), jnp.float32)
    segment_ids = jnp.asarray(random_segments(rng, batch, seq))

    def loss(attention):
        return lambda decay: jnp.sum(attention(q, k, v, decay, segment_ids=segment_ids,
                                               initial_state=s0)[0].astype(jnp.float32) * do)

    ours = lambda *args, **kwargs: interpret(*args, config, **kwargs)
    decay = jnp.zeros((heads,), jnp.float32)
    assert rel_err(jax.grad(loss(ours))(decay), jax.grad(loss(reference_f32))(decay)) < 1e-6


@pytest.mark.parametrize("lowering,chunks_per_split", [("mosaic", None), ("mosaic", 4),
                                                      ("triton", None)])
def test_bf16_decay_gradient_of_each_head_holds_the_bf16_bound(rng, lowering,
                                                               chunks_per_split):
    """A long memory (γ = 0, 0.02) over 10 chunks with an initial state, where the
    position-weighted sums cancel most: each head's decay gradient within 1e-2 needs the
    dQ and dK walks to hold the state and its updates at float32 precision (hi/lo
    16-bit pairs, chunk_math.split16; with one rounding it was 6% off) and to cancel
    against the dS they carry."""
    config = dataclasses.replace(
        tuning.kernel_config(64, 64, 64, itemsize=2, mosaic=lowering == "mosaic"),
        chunks_per_split=chunks_per_split)
    assert {x.lowering for x in config.launches} == {lowering}
    q, k, v, decay, kw = attention_inputs(rng, 1, 640, 2, 64, 64, decay=[0.0, 0.02],
                                          dtype=jnp.bfloat16, initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.bfloat16)

    def loss(attention):
        return lambda decay: jnp.sum(attention(q, k, v, decay,
                                               initial_state=kw["initial_state"])[0]
                                     .astype(jnp.float32) * do)

    ours = lambda *args, **kwargs: interpret(*args, config, **kwargs)
    g, g_ref = jax.grad(loss(ours))(decay), jax.grad(loss(reference_f32))(decay)
    assert float(jnp.max(jnp.abs(g - g_ref) / jnp.abs(g_ref))) < BF16_TOL
