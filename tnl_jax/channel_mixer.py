"""SGLU, TNL's channel mixer: ``(x W₁ ⊙ x W₂) W₃`` with no activation."""
from __future__ import annotations

import jax
from flax import nnx

from tnl_jax.config import ModelConfig
from tnl_jax.params import create_param, normal


def sglu(x: jax.Array, w1: jax.Array, w2: jax.Array, w3: jax.Array) -> jax.Array:
    """x ``(..., d)``, w1 and w2 ``(d, glu)``, w3 ``(glu, d)``, all in ``x.dtype``."""
    return ((x @ w1) * (x @ w2)) @ w3


class SGLU(nnx.Module):
    """Weights ``l1, l2 (d, glu)`` and ``l3 (glu, d)``, stored ``[in, out]``."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, glu, dtype = cfg.decoder_embed_dim, cfg.mlp_dim, cfg.weight_dtype
        init = normal(cfg.init_std)
        self.l1 = create_param(rngs.params(), (d, glu), ("embed", "mlp"), dtype, init)
        self.l2 = create_param(rngs.params(), (d, glu), ("embed", "mlp"), dtype, init)
        self.l3 = create_param(rngs.params(), (glu, d), ("mlp", "embed"), dtype, init)
        self.dtype = cfg.compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        cast = lambda w: w[...].astype(self.dtype)
        return sglu(x.astype(self.dtype), cast(self.l1), cast(self.l2), cast(self.l3))
