"""The Mosaic GPU forward walk (forward_mosaic.py) in Mosaic GPU's interpreter: through
the op, with the Triton backward, against the quadratic reference in float32."""
import dataclasses

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.lightning import kernel_vjp, reference, tuning
from attention_inputs import attention_inputs, rel_err

BF16_TOL = 1e-2


def mosaic_config(chunk: int = 64) -> tuning.KernelConfig:
    triton = tuning.Launch(64, chunk=chunk)
    return tuning.KernelConfig(forward=tuning.Launch(64, chunk=chunk, lowering="mosaic"),
                               dq=triton, dk=triton, dv=triton)


@pytest.mark.parametrize("chunks_per_split", [None, 2])
def test_mosaic_forward_through_the_op(rng, monkeypatch, chunks_per_split):
    """bf16, ragged T (5 chunks, the last short), packed documents, an initial state, two
    value blocks; one sequence split and several (state-only pass, scan, output pass)."""
    monkeypatch.setitem(tuning._TABLE, (64, 128), mosaic_config())
    q, k, v, decay, kw = attention_inputs(rng, 2, 300, 2, 64, 128, decay=[0.05, 1.5],
                                          dtype=jnp.bfloat16, segments=True,
                                          initial_state=True)
    run_ids = reference.run_ids_from_segments(kw["segment_ids"])
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.bfloat16)

    def loss(fn):
        def f(q, k, v, s0):
            o, final = fn(q, k, v, s0)
            return jnp.sum(o.astype(jnp.float32) * do) + jnp.sum(final), (o, final)
        return f

    def ours(q, k, v, s0):
        return kernel_vjp.lightning_attention_kernels(
            q, k, v, decay, run_ids=run_ids, initial_state=s0, chunk_size=None,
            interpret=True, chunks_per_split=chunks_per_split)

    def ref(q, k, v, s0):
        as64 = lambda x: jnp.asarray(x, jnp.float32)
        return reference.quadratic(as64(q), as64(k), as64(v), decay, run_ids=run_ids,
                                   initial_state=s0)

    args = (q, k, v, kw["initial_state"])
    grads, (o, final) = jax.grad(loss(ours), argnums=range(4), has_aux=True)(*args)
    grads_ref, (o_ref, final_ref) = jax.grad(loss(ref), argnums=range(4), has_aux=True)(*args)
    assert o.dtype == jnp.bfloat16
    assert rel_err(o, o_ref) < BF16_TOL and rel_err(final, final_ref) < BF16_TOL
    for name, g, g_ref in zip(["q", "k", "v", "initial_state"], grads, grads_ref):
        assert rel_err(g, g_ref) < BF16_TOL, name


def test_mosaic_launches_resolve_to_triton_where_wgmma_does_not_fit(monkeypatch):
    """float32 inputs (wgmma has no exact float32), 32-wide heads and GPUs without wgmma
    take Triton."""
    monkeypatch.setitem(tuning._TABLE, (64, 128), mosaic_config())
    monkeypatch.setitem(tuning._TABLE, (32, 32), mosaic_config(chunk=32))
    assert tuning.kernel_config(64, 128, None, itemsize=2).forward.lowering == "mosaic"
    assert tuning.kernel_config(64, 128, None, itemsize=4).forward.lowering == "triton"
    assert tuning.kernel_config(32, 32, None, itemsize=2).forward.lowering == "triton"
    assert tuning.kernel_config(64, 128, None, itemsize=2, mosaic=False).forward.lowering == (
        "triton")
    with pytest.raises(ValueError, match="lowering must be one of"):
        dataclasses.replace(tuning.Launch(), lowering="cuda")
