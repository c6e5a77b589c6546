"""The head's product: float32 logits; its backward in the operands' dtype."""
import jax
import jax.numpy as jnp
import numpy as np

from tests.tolerances import BF16_TOL, F32_TOL, rel_err
from tnl_jax.model.head_matmul import head_matmul

SPEC = "btd,vd->btv"


def test_float32_is_einsum_and_bfloat16_backward_is_close(rng):
    x = jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((11, 16)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((2, 5, 11)), jnp.float32)
    reference = lambda a, b: jnp.einsum(SPEC, a, b, preferred_element_type=jnp.float32)
    out, vjp = jax.vjp(lambda a, b: head_matmul(SPEC, a, b), x, w)
    want, want_vjp = jax.vjp(reference, x, w)
    np.testing.assert_array_equal(out, want)
    for got, expected in zip(vjp(ct), want_vjp(ct)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    bf16 = lambda t: t.astype(jnp.bfloat16)
    out16, vjp16 = jax.vjp(lambda a, b: head_matmul(SPEC, a, b), bf16(x), bf16(w))
    assert out16.dtype == jnp.float32
    assert rel_err(out16, reference(bf16(x), bf16(w))) <= F32_TOL
    for got, expected in zip(vjp16(ct), want_vjp(ct)):
        assert got.dtype == jnp.bfloat16
        assert rel_err(got, expected) <= BF16_TOL
