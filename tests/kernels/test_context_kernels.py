"""The kernels' side of context parallelism (context_kernels.py; interpret mode, Triton,
float32), over several state splits (the last one padded) with documents, against the
quadratic reference: a shard's own final state from a zero state, the gradient of the
state entering it from ``do`` alone, and the op from an entering state reusing both
passes' split states; and the ``xla`` backend's passes, derived from its scan
(context_parallel.LocalOp)."""
import functools

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import lightning_attention
from pallas_kernels.lightning import context_kernels, ops
from tests.kernels.attention_inputs import (
    assert_grads_close,
    attention_inputs,
    quadratic_reference,
)
from tests.kernels.test_kernels import pallas_call_outputs, table_config
from tests.tolerances import F32_TOL, rel_err


def reference_passes(q, k, v, decay, segment_ids, do):
    """``(final state from zero, ∂⟨o, do⟩/∂initial state)`` in float64."""
    q, k, v, decay, do = (jnp.asarray(x, jnp.float64) for x in (q, k, v, decay, do))
    zero = jnp.zeros((q.shape[0], q.shape[2], q.shape[3], v.shape[3]), jnp.float64)
    (_, final), vjp = jax.vjp(lambda s0: quadratic_reference(
        q, k, v, decay, segment_ids=segment_ids, initial_state=s0), zero)
    return final, vjp((do, jnp.zeros_like(final)))[0]


def test_kernel_state_passes_equal_the_reference(x64, rng, chunks_per_split=4, factor=2):
    q, k, v, decay, kw = attention_inputs(rng, 2, 200, 2, 16, 16, decay=[0.05, 0.4],
                                          segments=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    segments = kw["segment_ids"]
    options = dict(chunk_size=None, interpret=True, kernel_config=table_config(
        16, 16, chunks_per_split=chunks_per_split, state_split_factor=factor))
    final, _ = jax.jit(functools.partial(context_kernels.own_final_state, **options))(
        q, k, v, decay, segments)
    dstate, _ = jax.jit(functools.partial(context_kernels.entering_dstate, **options))(
        q, k, do, decay, segments)
    final_ref, dstate_ref = reference_passes(q, k, v, decay, segments, do)
    assert rel_err(final, final_ref) < F32_TOL and rel_err(dstate, dstate_ref) < F32_TOL


def test_xla_state_passes_are_derived_from_its_scan(x64, rng):
    q, k, v, decay, kw = attention_inputs(rng, 2, 70, 2, 8, 12, decay=[0.0, 0.9],
                                          segments=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    op = ops.local_op(chunk_size=16, backend="xla", kernel_config=None)
    assert op.own_state is op.entering_dstate is op.shard_vjp is None
    segments = kw["segment_ids"]
    final_ref, dstate_ref = reference_passes(q, k, v, decay, segments, do)
    assert rel_err(op.state_of(q, k, v, decay, segments)[0], final_ref) < F32_TOL
    assert rel_err(op.dstate_of(q, k, v, do, decay, segments)[0], dstate_ref) < F32_TOL


@pytest.mark.parametrize("decay_grad", [False, True])
def test_kernel_shard_vjp_takes_the_passes_split_states(x64, rng, decay_grad):
    """The op from an entering state, its forward handed the state-only pass's split
    states and its backward the dS-only pass's (neither walks them again), against the
    reference's VJP with that initial state: four output splits of two state splits."""
    q, k, v, decay, kw = attention_inputs(rng, 2, 200, 2, 16, 16, decay=[0.05, 0.4],
                                          segments=True, initial_state=True)
    segments, entering = kw["segment_ids"], kw["initial_state"]
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    dfinal = jnp.asarray(rng.standard_normal(entering.shape), jnp.float32)
    options = dict(chunk_size=None, interpret=True, kernel_config=table_config(
        16, 16, chunks_per_split=4, state_split_factor=2))

    @jax.jit
    def shard(q, k, v, decay):
        _, split_states = context_kernels.own_final_state(q, k, v, decay, segments, **options)
        out, backward = context_kernels.attend_vjp(q, k, v, decay, segments, entering,
                                                   split_states, decay_grad=decay_grad,
                                                   **options)
        _, split_dstates = context_kernels.entering_dstate(q, k, do, decay, segments,
                                                           **options)
        return out, backward(do, dfinal, split_dstates)

    (o, final), grads = shard(q, k, v, decay)
    primals = tuple(jnp.asarray(x, jnp.float64) for x in (q, k, v, decay, entering))
    (o_ref, final_ref), vjp = jax.vjp(lambda *p: quadratic_reference(
        *p[:4], segment_ids=segments, initial_state=p[4]), *primals)
    grads_ref = vjp((jnp.asarray(do, jnp.float64), jnp.asarray(dfinal, jnp.float64)))
    assert rel_err(o, o_ref) < F32_TOL and rel_err(final, final_ref) < F32_TOL
    assert len(grads) == (4 if decay_grad else 3)
    assert_grads_close(grads, grads_ref, seq=200, initial_state=entering)

    def plain(q, k, v, decay):  # the op alone: its own state-only and dS-only passes
        out, vjp = jax.vjp(lambda q, k, v, *trained: lightning_attention(
            q, k, v, trained[0] if trained else decay, segment_ids=segments,
            initial_state=entering, return_final_state=True, backend="interpret",
            kernel_config=options["kernel_config"]), q, k, v, *((decay,) if decay_grad else ()))
        return out, vjp((do, dfinal))
    launches = lambda fn: sum(map(len, pallas_call_outputs(
        jax.make_jaxpr(fn)(q, k, v, decay)).values()))
    if decay_grad:  # (the count is the same without)
        assert launches(shard) == launches(plain) == 6, "a state walked twice"
