"""SRMSNorm, the only norm of TNL: ``y = x · rsqrt(mean(x², -1) + eps)``, no scale;
and RMSNorm, the same with a learned gain per channel (the LLaMA-style baseline)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tnl_jax.model.params import create_param

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


class RMSNorm(nnx.Module):
    """``RMSNorm(features, axis_name)``: SRMSNorm times a gain ``(features,)`` that
    starts at one; ``axis_name`` is the gain's logical axis (``'embed'`` for the
    residual stream, ``None`` for a head's width)."""

    def __init__(self, features: int, axis_name: str | None = "embed", *,
                 eps: float = SRMS_EPS, param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.scale = create_param(rngs.params(), (features,), (axis_name,), param_dtype,
                                  jax.nn.initializers.ones)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        return srms_norm(x, self.eps) * self.scale[...].astype(x.dtype)


def make_norm(gain: bool, features: int, *, param_dtype: jnp.dtype = jnp.float32,
              rngs: nnx.Rngs) -> nnx.Module:
    """TNL's ``SRMSNorm`` or, with ``gain``, an ``RMSNorm`` over ``features``."""
    return RMSNorm(features, param_dtype=param_dtype, rngs=rngs) if gain else SRMSNorm()
