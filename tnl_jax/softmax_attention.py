"""The softmax-attention baseline's token mixer (LLaMA-style: fused q|k|v
projection, RoPE, causal ``jax.nn.dot_product_attention``, output projection).

cuDNN's fused kernel serves the GPU in bfloat16/float16 (head size a multiple of 8,
at most 256); everything else runs XLA's implementation. Packed documents are kept
apart by a segment mask. Decode uses a key/value cache of fixed size.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tnl_jax.config import ModelConfig
from tnl_jax.params import create_param, normal


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding, rotate-half form: x ``(B, T, H, e)``, positions ``(B, T)``."""
    half = x.shape[-1] // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions.astype(jnp.float32)[:, :, None, None] * freqs
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def attention_implementation(dtype: jnp.dtype, head_dim: int) -> str:
    on_gpu = jax.default_backend() == "gpu"
    cudnn_ok = dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 256
    return "cudnn" if on_gpu and cudnn_ok else "xla"


class SoftmaxAttention(nnx.Module):
    """Causal multi-head softmax attention with RoPE, weights ``(d, 3, d)`` and ``(d, d)``."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, dtype = cfg.decoder_embed_dim, cfg.weight_dtype
        init = normal(cfg.init_std)
        self.qkv_proj = create_param(rngs.params(), (d, 3, d), ("embed", None, "heads"), dtype, init)
        self.out_proj = create_param(rngs.params(), (d, d), ("heads", "embed"), dtype, init)
        self.heads = cfg.decoder_attention_heads
        self.rope_theta = cfg.rope_theta
        self.dtype = cfg.compute_dtype

    def _project(self, x: jax.Array, positions: jax.Array):
        qkv = jnp.einsum("btd,dfo->btfo", x.astype(self.dtype),
                         self.qkv_proj[...].astype(self.dtype))
        q, k, v = (qkv[:, :, i].reshape(*x.shape[:2], self.heads, -1) for i in range(3))
        return apply_rope(q, positions, self.rope_theta), apply_rope(k, positions, self.rope_theta), v

    def _output(self, o: jax.Array) -> jax.Array:
        return o.reshape(*o.shape[:-2], -1) @ self.out_proj[...].astype(self.dtype)

    def __call__(self, x: jax.Array, segment_ids: jax.Array | None, positions: jax.Array,
                 *, cache_size: int | None = None):
        """x ``(B, T, d)``; with ``cache_size`` also returns the ``(k, v)`` cache,
        ``(B, cache_size, H, e)`` each, holding this call's keys in its first T slots."""
        q, k, v = self._project(x, positions)
        mask = None
        if segment_ids is not None:
            mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
        o = jax.nn.dot_product_attention(
            q, k, v, mask=mask, is_causal=True,
            implementation=attention_implementation(q.dtype, q.shape[-1]))
        y = self._output(o)
        if cache_size is None:
            return y
        pad = ((0, 0), (0, cache_size - x.shape[1]), (0, 0), (0, 0))
        return y, (jnp.pad(k, pad), jnp.pad(v, pad))

    def step(self, x: jax.Array, positions: jax.Array, cache, index: jax.Array,
             kv_valid: jax.Array):
        """x ``(B, d)``: writes this token's key/value at slot ``index`` and attends to
        the slots where ``kv_valid (B, S)`` is true."""
        q, k, v = self._project(x[:, None], positions[:, None])
        k_cache = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), index, 1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), index, 1)
        o = jax.nn.dot_product_attention(q, k_cache, v_cache, mask=kv_valid[:, None, None, :],
                                         implementation="xla")
        return self._output(o)[:, 0], (k_cache, v_cache)
