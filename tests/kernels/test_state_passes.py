"""The kernels' state passes for context parallelism (state_passes.py; interpret mode,
Triton, float32): a shard's own final state from a zero state and the gradient of the
state entering it from ``do`` alone, over several state splits (the last one padded)
with documents, against the quadratic reference; and the ``xla`` backend's, derived
from its scan (context_parallel.LocalOp)."""
import functools

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.lightning import ops, state_passes
from tests.kernels.attention_inputs import attention_inputs, quadratic_reference
from tests.kernels.test_kernels import table_config
from tests.tolerances import F32_TOL, rel_err


def reference_passes(q, k, v, decay, segment_ids, do):
    """``(final state from zero, ∂⟨o, do⟩/∂initial state)`` in float64."""
    q, k, v, decay, do = (jnp.asarray(x, jnp.float64) for x in (q, k, v, decay, do))
    zero = jnp.zeros((q.shape[0], q.shape[2], q.shape[3], v.shape[3]), jnp.float64)
    (_, final), vjp = jax.vjp(lambda s0: quadratic_reference(
        q, k, v, decay, segment_ids=segment_ids, initial_state=s0), zero)
    return final, vjp((do, jnp.zeros_like(final)))[0]


@pytest.mark.parametrize("chunks_per_split,factor", [(3, 1), (4, 2)])
def test_kernel_state_passes_equal_the_reference(x64, rng, chunks_per_split, factor):
    q, k, v, decay, kw = attention_inputs(rng, 2, 200, 2, 16, 16, decay=[0.05, 0.4],
                                          segments=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    segments = kw["segment_ids"]
    options = dict(chunk_size=None, interpret=True, kernel_config=table_config(
        16, 16, chunks_per_split=chunks_per_split, state_split_factor=factor))
    final = jax.jit(functools.partial(state_passes.own_final_state, **options))(
        q, k, v, decay, segments)
    dstate = jax.jit(functools.partial(state_passes.entering_dstate, **options))(
        q, k, do, decay, segments)
    final_ref, dstate_ref = reference_passes(q, k, v, decay, segments, do)
    assert rel_err(final, final_ref) < F32_TOL and rel_err(dstate, dstate_ref) < F32_TOL


def test_xla_state_passes_are_derived_from_its_scan(x64, rng):
    q, k, v, decay, kw = attention_inputs(rng, 2, 70, 2, 8, 12, decay=[0.0, 0.9],
                                          segments=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    op = ops.local_op(chunk_size=16, backend="xla", kernel_config=None)
    assert op.own_state is None and op.entering_dstate is None
    segments = kw["segment_ids"]
    final_ref, dstate_ref = reference_passes(q, k, v, decay, segments, do)
    assert rel_err(op.state_of(q, k, v, decay, segments), final_ref) < F32_TOL
    assert rel_err(op.dstate_of(q, k, v, do, decay, segments), dstate_ref) < F32_TOL
