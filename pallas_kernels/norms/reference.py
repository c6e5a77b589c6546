"""The plain ``jnp`` SRMSNorm and its gated form, for tests and as the XLA baseline the
kernels are timed against: float32 math, results in the input's dtype."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def srms_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """``x · rsqrt(mean(x², -1) + eps)`` over the last axis, computed in float32 and
    returned in ``x.dtype`` (TNL's SRMSNorm: no gain)."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype)


def srms_norm_gate(o: jax.Array, u: jax.Array, eps: float = 1e-6) -> jax.Array:
    """``srms_norm(o) · u``: the token mixer's normed output times its gate, the norm
    rounded to ``o.dtype`` before the product (as the model's XLA path does)."""
    return srms_norm(o, eps) * u
