"""The output head's product: float32 logits from compute-dtype operands, with a
backward in the compute dtype.

``jnp.einsum(..., preferred_element_type=float32)`` gives exact float32 logits, but its
transpose multiplies the float32 cotangent with the weight in float32 (TF32 on a GPU,
half bfloat16's rate): 12% of a tnl-385m training step at 8K (benchmarks/RESULTS.md).
Here the cotangent is rounded to the operands' dtype first (it is ``softmax - onehot``,
bounded by 1), so both backward products run as the layers' own do.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def head_matmul(spec: str, x: jax.Array, w: jax.Array) -> jax.Array:
    """``einsum(spec, x, w)`` in float32; ``x`` and ``w`` of one (compute) dtype."""
    return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)


def _forward(spec, x, w):
    return head_matmul(spec, x, w), (x, w)


def _backward(spec, residuals, cotangent):
    x, w = residuals
    _, vjp = jax.vjp(lambda a, b: jnp.einsum(spec, a, b), x, w)
    return vjp(cotangent.astype(x.dtype))


head_matmul.defvjp(_forward, _backward)
