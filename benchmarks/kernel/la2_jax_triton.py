"""The original Lightning Attention-2 Triton forward kernel (``lightning_attn`` package),
called from JAX through ``jax_triton.triton_call``: the anchor and ours in one process.

The kernel is used unchanged, with the launch the package itself uses (chunk 64, value
blocks of 32, Triton's default 4 warps and 3 stages). It takes ``(B, H, T, d)`` inputs
and writes its output before the decay argument, so a two-line Triton wrapper puts the
output pointer where ``triton_call`` passes it (last).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import jax_triton
import triton
import triton.language as tl
from lightning_attn.ops.triton.lightning_attn2 import _fwd_kernel

CHUNK, VALUE_BLOCK = 64, 32  # LightningAttention2.forward's BLOCK and BLOCK_MODEL


@triton.jit
def _fwd_output_last(Q, K, V, S, Out, b: tl.constexpr, h: tl.constexpr, n: tl.constexpr,
                     d: tl.constexpr, e: tl.constexpr, BLOCK: tl.constexpr,
                     NUM_BLOCK: tl.constexpr, BLOCK_MODEL: tl.constexpr):
    _fwd_kernel(Q, K, V, Out, S, b, h, n, d, e, BLOCK, NUM_BLOCK, BLOCK_MODEL)


def la2_forward(q: jax.Array, k: jax.Array, v: jax.Array, decay: jax.Array) -> jax.Array:
    """``q, k (B, H, T, d)``, ``v (B, H, T, e)``, ``decay (H,)`` float32 → ``o (B, H, T, e)``."""
    b, h, n, d = q.shape
    e = v.shape[-1]
    block_model = min(triton.next_power_of_2(e), VALUE_BLOCK)
    return jax_triton.triton_call(
        q, k, v, decay.astype(jnp.float32),
        kernel=_fwd_output_last,
        out_shape=jax.ShapeDtypeStruct((b, h, n, e), q.dtype),
        grid=(b * h, triton.cdiv(e, block_model)),
        b=b, h=h, n=n, d=d, e=e, BLOCK=CHUNK, NUM_BLOCK=triton.cdiv(n, CHUNK),
        BLOCK_MODEL=block_model)
