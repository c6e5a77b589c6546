"""SRMSNorm, the only norm of TNL: ``y = x · rsqrt(mean(x², -1) + eps)``, no scale."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

SRMS_EPS = 1e-6


def srms_norm(x: jax.Array, eps: float = SRMS_EPS) -> jax.Array:
    """Computed in float32 and returned in ``x.dtype`` (as the published code does)."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype)


class SRMSNorm(nnx.Module):
    """Simple RMS norm over the last axis; no parameters."""

    def __init__(self, eps: float = SRMS_EPS):
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        return srms_norm(x, self.eps)
