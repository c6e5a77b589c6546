"""The decode step's kernel (interpreted) against the XLA step and the float64
recurrence: random states, head dims that need padding, every decay from 0 to +inf,
bfloat16 inputs, gradients against ``jax.vjp`` of the XLA step, and the caller's
state left as it was (the kernel writes its new state over a donated input only)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import lightning_attention_step
from tests.tolerances import BF16_TOL, F32_TOL, rel_err

DECAYS = [0.0, 0.05, 1.0, 8.0, float("inf")]


def step_inputs(rng, batch, dk, dv, dtype=jnp.float32):
    heads = len(DECAYS)
    q, k = (jnp.asarray(rng.standard_normal((batch, heads, dk)) / np.sqrt(dk), dtype)
            for _ in range(2))
    v = jnp.asarray(rng.standard_normal((batch, heads, dv)), dtype)
    state = jnp.asarray(rng.standard_normal((batch, heads, dk, dv)), jnp.float32)
    return q, k, v, jnp.asarray(DECAYS, jnp.float32), state


def recurrence(q, k, v, decay, state):
    """float64 numpy: ``S' = λ S + k vᵀ``, ``o = qᵀ S'`` (λ = 0 drops S, even inf)."""
    q, k, v, state = (np.asarray(x, np.float64) for x in (q, k, v, state))
    lam = np.exp(-np.asarray(decay, np.float64))[None, :, None, None]
    new = np.where(lam != 0, state * lam, 0) + k[..., :, None] * v[..., None, :]
    return np.einsum("bhk,bhkv->bhv", q, new), new


@pytest.mark.parametrize("dk,dv", [(16, 16), (32, 128), (24, 40)],
                         ids=["square", "two-value-blocks", "padded"])
def test_kernel_matches_recurrence(rng, dk, dv):
    inputs = step_inputs(rng, 3, dk, dv)
    before = np.asarray(inputs[-1])
    o, new = jax.jit(lambda *a: lightning_attention_step(*a, backend="interpret"))(*inputs)
    o_ref, new_ref = recurrence(*inputs)
    assert o.dtype == jnp.float32 and new.dtype == jnp.float32 and new.shape == new_ref.shape
    assert rel_err(o, o_ref) < F32_TOL and rel_err(new, new_ref) < F32_TOL
    np.testing.assert_array_equal(np.asarray(inputs[-1]), before)


def test_kernel_bfloat16(rng):
    inputs = step_inputs(rng, 2, 32, 32, jnp.bfloat16)
    o, new = lightning_attention_step(*inputs, backend="interpret")
    o_ref, new_ref = recurrence(*inputs)
    assert o.dtype == jnp.bfloat16 and new.dtype == jnp.float32
    assert rel_err(o, o_ref) < BF16_TOL and rel_err(new, new_ref) < F32_TOL


def test_kernel_gradients_match_xla(rng):
    inputs = step_inputs(rng, 2, 16, 32)
    inputs = (*inputs[:3], jnp.asarray([0.0, 0.05, 1.0, 8.0, 30.0]), inputs[4])
    cotangents = (jnp.asarray(rng.standard_normal((2, 5, 32)), jnp.float32),
                  jnp.asarray(rng.standard_normal((2, 5, 16, 32)), jnp.float32))

    def grads(backend):
        _, vjp = jax.vjp(lambda *a: lightning_attention_step(*a, backend=backend), *inputs)
        return vjp(cotangents)

    for got, want in zip(grads("interpret"), grads("xla")):
        assert rel_err(got, want) < F32_TOL


def test_kernel_in_a_donating_loop(rng):
    """Steps chained in a jitted loop that donates the state (decode's pattern)."""
    q, k, v, decay, state = step_inputs(rng, 2, 16, 16)

    @jax.jit
    def three_steps(state):
        for scale in (1.0, 0.5, -2.0):
            o, state = lightning_attention_step(q * scale, k, v * scale, decay, state,
                                                backend="interpret")
        return o, state

    new_ref = state
    for scale in (1.0, 0.5, -2.0):
        o_ref, new_ref = recurrence(q * scale, k, v * scale, decay, new_ref)
    o, new = jax.jit(three_steps.__wrapped__, donate_argnums=0)(state.copy())
    assert rel_err(o, o_ref) < F32_TOL and rel_err(new, new_ref) < F32_TOL
