"""SGLU, TNL's channel mixer: ``(x W₁ ⊙ x W₂) W₃`` with no activation; with
``activation="silu"`` it is SwiGLU, ``(silu(x W₁) ⊙ x W₂) W₃`` (the LLaMA-style baseline)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tnl_jax.model.fp8 import fp8_scalings, project
from tnl_jax.model.params import create_param, normal
from tnl_jax.model.remat import MLP_PROJECTION, name_projection
from tnl_jax.partitioning import constrain

# The hidden activations (B, T, glu) under a mesh: split over `tensor` like W₁ and W₂'s
# columns (Megatron style), so only the output of W₃ is reduced.
HIDDEN = ("batch", "seq", "mlp")


ACTIVATIONS = {None: lambda gate: gate, "silu": jax.nn.silu}


def sglu(x: jax.Array, w1: jax.Array, w2: jax.Array, w3: jax.Array,
         activation: str | None = None, fp8_scaling=None) -> jax.Array:
    """x ``(..., d)``, w1 and w2 ``(d, glu)``, w3 ``(glu, d)``, products in ``x.dtype``
    (or in fp8 by ``fp8_scaling``'s three ``Fp8Scaling``s: ``model/fp8.py``);
    ``activation`` (of ``ACTIVATIONS``) applies to ``x W₁``."""
    gate = ACTIVATIONS[activation](name_projection(project(x, w1, fp8_scaling, 0),
                                                   MLP_PROJECTION))
    hidden = gate * name_projection(project(x, w2, fp8_scaling, 1), MLP_PROJECTION)
    if hidden.ndim == len(HIDDEN):
        hidden = constrain(hidden, HIDDEN)
    return project(hidden, w3, fp8_scaling, 2)


class SGLU(nnx.Module):
    """``SGLU(in_features, hidden_features, rngs=...)``: weights ``l1, l2 (d, glu)`` and
    ``l3 (glu, d)``, stored ``[in, out]``, drawn from ``N(0, init_std²)``;
    ``activation``: ``None`` (TNL) or ``"silu"`` (SwiGLU)."""

    def __init__(self, in_features: int, hidden_features: int, *, init_std: float = 0.02,
                 activation: str | None = None, dtype: jnp.dtype = jnp.float32,
                 param_dtype: jnp.dtype = jnp.float32, projection_dtype: str | None = None,
                 rngs: nnx.Rngs):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}, expected one of {tuple(ACTIVATIONS)}")
        self.activation = activation
        d, glu, init = in_features, hidden_features, normal(init_std)
        self.l1 = create_param(rngs.params(), (d, glu), ("embed", "mlp"), param_dtype, init)
        self.l2 = create_param(rngs.params(), (d, glu), ("embed", "mlp"), param_dtype, init)
        self.l3 = create_param(rngs.params(), (glu, d), ("mlp", "embed"), param_dtype, init)
        self.fp8_scaling = fp8_scalings(3, projection_dtype)
        self.dtype = jnp.dtype(dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        cast = lambda w: w[...].astype(self.dtype)
        return sglu(x.astype(self.dtype), cast(self.l1), cast(self.l2), cast(self.l3),
                    self.activation, self.fp8_scaling)
