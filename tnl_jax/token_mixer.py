"""TNL's token mixer, gated norm-linear attention (``NormLinearAttention`` in the
published code):

    q, k, v, u = split₄(x W_qkvu);  q, k = silu(q), silu(k);  [LRPE on q, k]
    o = lightning_attention(q, k, v, s);  y = (SRMSNorm(o) ⊙ u) W_out

``W_qkvu`` is stored ``(d, 4, d)`` (in, q|k|v|u, heads·e) so that the last axis
shards by heads without cutting across the four parts.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pallas_kernels import lightning_attention, lightning_attention_step
from tnl_jax.config import ModelConfig
from tnl_jax.lrpe import Lrpe
from tnl_jax.norms import srms_norm
from tnl_jax.params import create_param, normal


class NormLinearAttention(nnx.Module):
    """One token mixer. ``decay_init (H,)`` seeds the learned decay when
    ``cfg.decay_learnable``; otherwise each call receives the fixed decay."""

    def __init__(self, cfg: ModelConfig, use_lrpe: bool, decay_init: jax.Array,
                 rngs: nnx.Rngs):
        d, heads, dtype = cfg.decoder_embed_dim, cfg.decoder_attention_heads, cfg.weight_dtype
        init = normal(cfg.init_std)
        self.qkvu_proj = create_param(rngs.params(), (d, 4, d), ("embed", None, "heads"), dtype, init)
        self.out_proj = create_param(rngs.params(), (d, d), ("heads", "embed"), dtype, init)
        self.lrpe = Lrpe(heads, cfg.head_dim, dtype, rngs) if use_lrpe else None
        if cfg.decay_learnable:
            # Learned in log space: the decay stays positive.
            log_init = lambda key, shape, dt: jnp.log(decay_init).astype(dt)
            self.log_decay = create_param(rngs.params(), (heads,), (None,), jnp.float32, log_init)
        else:
            self.log_decay = None
        self.heads = heads
        self.dtype = cfg.compute_dtype
        self.backend = cfg.attention_backend
        self.chunk_size = cfg.chunk_size

    def decay(self, fixed: jax.Array) -> jax.Array:
        """The ``(H,)`` float32 decay this layer uses."""
        return fixed if self.log_decay is None else jnp.exp(self.log_decay[...])

    def _project(self, x: jax.Array, positions: jax.Array):
        """x ``(B, T, d)`` -> q, k ``(B, T, H, dk)``, v ``(B, T, H, e)``, u ``(B, T, d)``."""
        w = self.qkvu_proj[...].astype(self.dtype)
        qkvu = jnp.einsum("btd,dfo->btfo", x.astype(self.dtype), w)
        q, k, v, u = (qkvu[:, :, i] for i in range(4))
        split_heads = lambda t: t.reshape(*t.shape[:-1], self.heads, -1)
        q, k, v = split_heads(jax.nn.silu(q)), split_heads(jax.nn.silu(k)), split_heads(v)
        if self.lrpe is not None:
            q, k = self.lrpe(q, positions), self.lrpe(k, positions)
        return q, k, v, u

    def _output(self, o: jax.Array, u: jax.Array) -> jax.Array:
        o = srms_norm(o.reshape(*o.shape[:-2], -1))
        return (o * u) @ self.out_proj[...].astype(self.dtype)

    def __call__(self, x: jax.Array, decay: jax.Array, segment_ids: jax.Array | None,
                 positions: jax.Array, *, return_state: bool = False):
        """x ``(B, T, d)``; returns y, or ``(y, final_state (B, H, dk, e))``."""
        q, k, v, u = self._project(x, positions)
        o, state = lightning_attention(q, k, v, self.decay(decay), segment_ids=segment_ids,
                                       return_final_state=True, chunk_size=self.chunk_size,
                                       backend=self.backend)
        y = self._output(o, u)
        return (y, state) if return_state else y

    def step(self, x: jax.Array, decay: jax.Array, positions: jax.Array, state: jax.Array):
        """One decode step: x ``(B, d)``, positions ``(B,)`` -> ``(y (B, d), state)``."""
        q, k, v, u = self._project(x[:, None], positions[:, None])
        o, state = lightning_attention_step(q[:, 0], k[:, 0], v[:, 0], self.decay(decay), state)
        return self._output(o, u[:, 0]), state
