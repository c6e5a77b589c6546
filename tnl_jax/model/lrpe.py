"""LRPE (linearized relative positional encoding) of TNL's first layer:
``x -> [x cos(θ t), x sin(θ t)]`` per head, so that ``q_t · k_s`` depends on
``t − s`` through ``cos(θ (t − s))``. It doubles the head size of q and k.

Positions are float32 here. The published code casts them to the activation dtype
(bfloat16 in its checkpoints), which is exact only up to 256: past that, its
positions are rounded (to multiples of 2, 4, ...) while ours are exact, so bf16 runs
of the two differ slightly on long inputs; in float32 they agree.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnl_jax.model.params import create_param


def lrpe_theta_init(heads: int, head_dim: int) -> np.ndarray:
    """``10000^(−2/d · arange(d))`` over the whole width ``d = H·e``, as ``(H, 1, e)``."""
    d = heads * head_dim
    return (10000.0 ** (-2.0 / d * np.arange(d))).reshape(heads, 1, head_dim).astype(np.float32)


def apply_lrpe(x: jax.Array, theta: jax.Array, positions: jax.Array) -> jax.Array:
    """x ``(B, T, H, e)``, theta ``(H, 1, e)``, positions ``(B, T)`` -> ``(B, T, H, 2e)``."""
    angle = positions.astype(jnp.float32)[:, :, None, None] * theta[:, 0, :].astype(jnp.float32)
    x32 = x.astype(jnp.float32)
    return jnp.concatenate([x32 * jnp.cos(angle), x32 * jnp.sin(angle)], axis=-1).astype(x.dtype)


class Lrpe(nnx.Module):
    """Learned per-head frequencies ``theta (H, 1, e)`` (the published layout).

    ``Lrpe(num_heads, head_dim, rngs=...)(x (B, T, H, e), positions (B, T))``.
    """

    def __init__(self, num_heads: int, head_dim: int, *,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        init = lambda key, shape, dtype: jnp.asarray(lrpe_theta_init(num_heads, head_dim), dtype)
        self.theta = create_param(rngs.params(), (num_heads, 1, head_dim), ("heads", None, None),
                                  param_dtype, init)

    def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        return apply_lrpe(x, self.theta[...], positions)
