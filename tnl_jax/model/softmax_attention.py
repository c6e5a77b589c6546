"""The softmax-attention baseline's token mixer (LLaMA-style: fused q|k|v
projection, RoPE, causal ``jax.nn.dot_product_attention``, output projection), with
optional QK normalisation (``qk_norm``: an RMSNorm with a gain over each head's
queries and keys before RoPE, which keeps the logits bounded early in training).
``rope_theta=None`` leaves out the positional encoding (NoPE): in a hybrid the
lightning layers before a softmax layer already carry position (their decay, LRPE),
as Mamba's layers do for Jamba's attention layers, and a softmax layer without RoPE
meets no rotation it was not trained on when the rows grow longer. ``logn_length=L``
sharpens the queries past position L by ``log(p + 1) / log(L)`` (Qwen's logn
attention), so that a query's weights over ``n`` keys need not flatten as the keys
outnumber the ``L`` it was trained over.

cuDNN's fused kernel serves the GPU in bfloat16/float16 (head size a multiple of 8,
at most 256); everything else runs XLA's implementation. Packed documents are kept
apart by a segment mask. Decode uses a key/value cache of fixed size.

Under a mesh whose ``context`` axis splits the sequence, every query needs every key:
XLA's implementation keeps the queries (and the mask's rows) split over ``context``
and gathers the keys and values whole (``seq -> None``), so each device computes its
own queries' rows; cuDNN's partitioner accepts no split of the sequence (or of the
head size), so there q, k, v and the mask are all gathered over the sequence and
split over batch and heads only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tnl_jax.model.fp8 import fp8_scalings, project
from tnl_jax.model.norms import RMSNorm
from tnl_jax.model.params import create_param, normal
from tnl_jax.model.positions import default_positions
from tnl_jax.model.remat import name_op_inputs, name_op_output, name_projection
from tnl_jax.partitioning import constrain
from tnl_jax.range_checks import integer


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding, rotate-half form: x ``(B, T, H, e)``, positions ``(B, T)``."""
    half = x.shape[-1] // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions.astype(jnp.float32)[:, :, None, None] * freqs
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def logn_query_scale(positions: jax.Array, length: int) -> jax.Array:
    """``max(1, log(p + 1) / log(length))`` per position ``(B, T)``: 1 within the
    training rows, growing with the log of the row past them."""
    p = positions.astype(jnp.float32) + 1.0
    return jnp.maximum(1.0, jnp.log(p) / jnp.log(float(length)))


def attention_implementation(dtype: jnp.dtype, head_dim: int) -> str:
    on_gpu = jax.default_backend() == "gpu"
    cudnn_ok = dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 256
    return "cudnn" if on_gpu and cudnn_ok else "xla"


class SoftmaxAttention(nnx.Module):
    """``SoftmaxAttention(num_heads, in_features, rngs=...)``: causal multi-head softmax
    attention with RoPE (none with ``rope_theta=None``), weights ``(d, 3, d)`` and
    ``(d, d)`` (and with ``qk_norm`` a gain of the head size for queries and one for
    keys); ``logn_length``: queries sharpened past that position (``logn_query_scale``)."""

    def __init__(self, num_heads: int, in_features: int, *,
                 rope_theta: float | None = 10000.0,
                 qk_norm: bool = False, logn_length: int | None = None,
                 init_std: float = 0.02, dtype: jnp.dtype = jnp.float32,
                 param_dtype: jnp.dtype = jnp.float32, projection_dtype: str | None = None,
                 rngs: nnx.Rngs):
        d, init = in_features, normal(init_std)
        if d % num_heads:
            raise ValueError(f"in_features={d} is not divisible by num_heads={num_heads}")
        self.qkv_proj = create_param(rngs.params(), (d, 3, d), ("embed", None, "heads"),
                                     param_dtype, init)
        self.out_proj = create_param(rngs.params(), (d, d), ("heads", "embed"), param_dtype, init)
        self.fp8_scaling = fp8_scalings(2, projection_dtype)  # q|k|v, output
        self.heads = num_heads
        self.rope_theta = rope_theta
        if logn_length is not None:
            for problem in integer("logn_length", logn_length, 2, " (the training rows) or None"):
                raise ValueError(problem)
        self.logn_length = logn_length
        norm = lambda: RMSNorm(d // num_heads, None, param_dtype=param_dtype, rngs=rngs)
        self.q_norm, self.k_norm = (norm(), norm()) if qk_norm else (None, None)
        self.dtype = jnp.dtype(dtype)

    def _project(self, x: jax.Array, positions: jax.Array):
        qkv = name_projection(project(x.astype(self.dtype), self.qkv_proj[...],
                                      self.fp8_scaling, 0))
        q, k, v = (qkv[:, :, i].reshape(*x.shape[:2], self.heads, -1) for i in range(3))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope_theta is not None:
            q, k = (apply_rope(t, positions, self.rope_theta) for t in (q, k))
        if self.logn_length is not None:
            scale = logn_query_scale(positions, self.logn_length)[:, :, None, None]
            q = (q.astype(jnp.float32) * scale).astype(q.dtype)
        return q, k, v

    def _output(self, o: jax.Array) -> jax.Array:
        return project(o.reshape(*o.shape[:-2], -1), self.out_proj[...], self.fp8_scaling, 1)

    def __call__(self, x: jax.Array, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, *, cache_size: int | None = None):
        """x ``(B, T, d)``; with ``cache_size`` also returns the ``(k, v)`` cache,
        ``(B, cache_size, H, e)`` each, holding this call's keys in its first T slots.
        ``positions (B, T)`` (RoPE) default to the position inside each segment."""
        if positions is None:
            positions = default_positions(x.shape[0], x.shape[1], segment_ids)
        q, k, v = self._project(x, positions)
        implementation = attention_implementation(q.dtype, q.shape[-1])
        query_seq = "seq" if implementation == "xla" else None  # See the module docstring.
        q = constrain(q, ("batch", query_seq, "heads", None))
        k, v = (constrain(t, ("batch", None, "heads", None)) for t in (k, v))
        q, k, v = name_op_inputs(q, k, v)
        mask = None
        if segment_ids is not None:
            mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
            mask = constrain(mask, ("batch", None, query_seq, None))
        o = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True,
                                         implementation=implementation)
        y = self._output(name_op_output(o))
        if cache_size is None:
            return y
        pad = ((0, 0), (0, cache_size - x.shape[1]), (0, 0), (0, 0))
        return y, (jnp.pad(k, pad), jnp.pad(v, pad))

    def step(self, x: jax.Array, cache, positions: jax.Array, *, index: jax.Array,
             kv_valid: jax.Array):
        """x ``(B, d)``: writes this token's key/value at slot ``index`` and attends to
        the slots where ``kv_valid (B, S)`` is true."""
        q, k, v = self._project(x[:, None], positions[:, None])
        k_cache = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), index, 1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), index, 1)
        o = jax.nn.dot_product_attention(q, k_cache, v_cache, mask=kv_valid[:, None, None, :],
                                         implementation="xla")
        return self._output(o)[:, 0], (k_cache, v_cache)
