"""The Mosaic GPU walks (mosaic_walk.py) in Mosaic GPU's interpreter: forward and
backward through the op, against the quadratic reference in float32."""
import dataclasses

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.lightning import kernel_vjp, reference, tuning
from attention_inputs import attention_inputs, random_segments, rel_err

BF16_TOL = 1e-2


def mosaic_row(chunk: int = 64, block: int = 128) -> dict[str, tuning.Launch]:
    return {walk: tuning.Launch(block, chunk=chunk, lowering="mosaic") for walk in tuning.WALKS}


@pytest.mark.parametrize("dk,dv,chunks_per_split,factor", [(64, 128, None, None),
                                                          (128, 64, 2, 2)])
def test_mosaic_walks_through_the_op(rng, monkeypatch, dk, dv, chunks_per_split, factor):
    """Every walk in Mosaic GPU, bf16: ragged T (5 chunks, the last short), packed
    documents, an initial state; one and two compute warpgroups (64 and 128 columns);
    one sequence split and several (state-only passes in splits of one chunk, the last
    all padding, sums across splits, output passes)."""
    monkeypatch.setitem(tuning._HOPPER_TABLE, (dk, dv), mosaic_row())
    config = tuning.kernel_config(dk, dv, None, itemsize=2)
    assert {x.lowering for x in config.launches} == {"mosaic"}
    q, k, v, decay, kw = attention_inputs(rng, 1, 300, 2, dk, dv, decay=[0.05, 1.5],
                                          dtype=jnp.bfloat16, segments=True,
                                          initial_state=True)
    run_ids = reference.run_ids_from_segments(kw["segment_ids"])
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.bfloat16)

    def loss(fn):
        def f(q, k, v, decay, s0):
            o, final = fn(q, k, v, decay, s0)
            return jnp.sum(o.astype(jnp.float32) * do) + jnp.sum(final), (o, final)
        return f

    def ours(q, k, v, decay, s0):
        return kernel_vjp.lightning_attention_kernels(
            q, k, v, decay, run_ids=run_ids, initial_state=s0, chunk_size=None,
            interpret=True, chunks_per_split=chunks_per_split, state_split_factor=factor)

    def ref(q, k, v, decay, s0):
        as32 = lambda x: jnp.asarray(x, jnp.float32)
        return reference.quadratic(as32(q), as32(k), as32(v), decay, run_ids=run_ids,
                                   initial_state=s0)

    args = (q, k, v, decay, kw["initial_state"])
    grads, (o, final) = jax.grad(loss(ours), argnums=range(5), has_aux=True)(*args)
    grads_ref, (o_ref, final_ref) = jax.grad(loss(ref), argnums=range(5), has_aux=True)(*args)
    assert o.dtype == jnp.bfloat16
    assert rel_err(o, o_ref) < BF16_TOL and rel_err(final, final_ref) < BF16_TOL
    for name, g, g_ref in zip(["q", "k", "v", "decay", "initial_state"], grads, grads_ref):
        assert rel_err(g, g_ref) < BF16_TOL, name


@pytest.mark.parametrize("dk,dv,chunks_per_split", [(64, 128, None), (128, 64, 2)])
def test_mosaic_decay_gradient_in_exact_arithmetic(rng, monkeypatch, dk, dv, chunks_per_split):
    """γ = 0 with sparse ternary rows and an integer initial state: every product is exact
    in bf16 with float32 sums, so the decay-gradient partials of the dQ and dK walks
    (positions, split-anchored boundary terms, segments) must match the reference."""
    monkeypatch.setitem(tuning._HOPPER_TABLE, (dk, dv), mosaic_row())
    batch, seq, heads = 1, 300, 2

    def ternary(width):
        values = rng.choice([-1.0, 0.0, 1.0], size=(batch, seq, heads, width), p=[0.05, 0.9, 0.05])
        return jnp.asarray(values, jnp.bfloat16)

    q, k, v, do = ternary(dk), ternary(dk), ternary(dv), ternary(dv)
    s0 = jnp.asarray(rng.integers(-2, 3, (batch, heads, dk, dv)), jnp.float32)
    run_ids = reference.run_ids_from_segments(jnp.asarray(random_segments(rng, batch, seq)))

    def loss(attention):
        return lambda decay: jnp.sum(attention(decay).astype(jnp.float32) * do)

    def ours(decay):
        return kernel_vjp.lightning_attention_kernels(
            q, k, v, decay, run_ids=run_ids, initial_state=s0, chunk_size=None,
            interpret=True, chunks_per_split=chunks_per_split)[0]

    def ref(decay):
        as32 = lambda x: x.astype(jnp.float32)
        return reference.quadratic(as32(q), as32(k), as32(v), decay, run_ids=run_ids,
                                   initial_state=s0)[0]

    decay = jnp.zeros((heads,), jnp.float32)
    assert rel_err(jax.grad(loss(ours))(decay), jax.grad(loss(ref))(decay)) < 1e-6


@pytest.mark.parametrize("lowering,chunks_per_split", [("mosaic", None), ("mosaic", 4),
                                                      ("triton", None)])
def test_bf16_decay_gradient_of_each_head_holds_the_bf16_bound(rng, monkeypatch, lowering,
                                                               chunks_per_split):
    """A long memory (γ = 0, 0.02) over 10 chunks with an initial state, where the
    position-weighted sums cancel most: each head's decay gradient within 1e-2 needs the
    dQ and dK walks to hold the state and its updates at float32 precision (hi/lo
    16-bit pairs, chunk_math.split16; with one rounding it was 6% off) and to cancel
    against the dS they carry."""
    if lowering == "mosaic":
        monkeypatch.setitem(tuning._HOPPER_TABLE, (64, 64), mosaic_row(block=64))
    else:
        monkeypatch.delitem(tuning._HOPPER_TABLE, (64, 64))
    q, k, v, decay, kw = attention_inputs(rng, 1, 640, 2, 64, 64, decay=[0.0, 0.02],
                                          dtype=jnp.bfloat16, initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.bfloat16)

    def ours(decay):
        o, _ = kernel_vjp.lightning_attention_kernels(
            q, k, v, decay, run_ids=None, initial_state=kw["initial_state"], chunk_size=64,
            interpret=True, chunks_per_split=chunks_per_split)
        return jnp.sum(o.astype(jnp.float32) * do)

    def ref(decay):
        as32 = lambda x: x.astype(jnp.float32)
        o, _ = reference.quadratic(as32(q), as32(k), as32(v), decay,
                                   initial_state=kw["initial_state"])
        return jnp.sum(o * do)

    g, g_ref = jax.grad(ours)(decay), jax.grad(ref)(decay)
    assert float(jnp.max(jnp.abs(g - g_ref) / jnp.abs(g_ref))) < BF16_TOL


def test_mosaic_launches_resolve_to_triton_where_wgmma_does_not_fit(monkeypatch):
    """float32 inputs (wgmma has no exact float32), 32-wide heads, buffers beyond shared
    memory and GPUs without wgmma keep the Triton row's launches."""
    monkeypatch.setitem(tuning._HOPPER_TABLE, (64, 128), mosaic_row())
    monkeypatch.setitem(tuning._HOPPER_TABLE, (32, 32), mosaic_row(chunk=32))
    hopper = tuning.kernel_config(64, 128, None, itemsize=2)
    assert {x.lowering for x in hopper.launches} == {"mosaic"} and hopper.fused_dkdv is None
    triton = tuning.kernel_config(64, 128, None, itemsize=2, mosaic=False)
    assert {x.lowering for x in triton.launches} == {"triton"}
    assert tuning.kernel_config(64, 128, None, itemsize=4) == tuning.kernel_config(
        64, 128, None, itemsize=4, mosaic=False)
    assert tuning.kernel_config(32, 32, None) == tuning.kernel_config(32, 32, None, mosaic=False)
    # As compiled on the H200: 2 stages of 128-column tiles at d 128 fit, 3 do not.
    two, three = (tuning.Launch(128, 4, stages, 64, lowering="mosaic") for stages in (2, 3))
    assert tuning.mosaic_fits(two, 128, 2, decay_grad=True)
    assert not tuning.mosaic_fits(three, 128, 2, decay_grad=False)
    # The decay gradient's hi/lo state at d 256 fits with one pipeline stage, not two:
    # the launch keeps the deepest pipeline that fits.
    fixed, learned = (tuning.kernel_config(256, 256, None, decay_grad=grad) for grad in (0, 1))
    assert (fixed.dq.num_stages, learned.dq.num_stages, learned.dk.num_stages) == (2, 1, 1)
    assert learned.dq.lowering == "mosaic" and learned.forward == fixed.forward
    with pytest.raises(ValueError, match="lowering must be one of"):
        dataclasses.replace(tuning.Launch(), lowering="cuda")
