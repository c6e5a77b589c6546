"""fp8 projections (``ModelConfig.projection_dtype="fp8"``): a layer's matrix products
(q|k|v|u, output, MLP) by flax's ``fp8_scaled_dot_general`` with delayed scaling:
inputs and weights cast to ``float8_e4m3fn``, the output's gradient to ``float8_e5m2``,
each by a scale from the largest magnitude seen over the last ``AMAX_HISTORY`` steps
(Transformer Engine's recipe; flax.linen.fp8_ops). Embedding, head and the attention op
stay in the compute dtype.

Each product owns an ``Fp8Scaling``: six ``Fp8Meta`` variables (the three scales and
amax histories). ``Fp8Meta`` is an ``nnx.Param`` so that it lives with the parameters
(checkpointed, restored, sharded, seen by evaluation and generation), but it is not
trained: its "gradient" is its next value (flax's custom VJPs return it), which the
train step writes over it (``training.steps``: ``take_fp8_meta``) instead of passing it
to the optimizer. Generation reads the trained scales; its decode layout runs the
q|k|v|u and MLP input products of a decode step in the compute dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.linen import fp8_ops

AMAX_HISTORY = 16  # steps of amax history per tensor
PROJECTION_DTYPES = (None, "fp8")
META_NAMES = ("input_scale", "input_amax", "kernel_scale", "kernel_amax", "grad_scale",
              "grad_amax")


class Fp8Meta(nnx.Param):
    """fp8 scaling state: kept with the parameters, replaced (not trained) each step."""


def is_fp8_meta(path: tuple, _leaf=None) -> bool:
    """Whether a parameter tree's ``path`` leads to an ``Fp8Scaling``'s variable."""
    return any(str(getattr(p, "key", p)) == "fp8_scaling" for p in path)


class Fp8Scaling(nnx.Module):
    """The delayed-scaling state of one fp8 matrix product (scales start at 1)."""

    def __init__(self):
        for name in META_NAMES:
            is_scale = name.endswith("scale")
            value = (jnp.ones((1,), jnp.float32) if is_scale
                     else jnp.zeros((AMAX_HISTORY,), jnp.float32))
            setattr(self, name, Fp8Meta(value, out_sharding=(None,), eager_sharding=False))

    def dot(self, x: jax.Array, w: jax.Array) -> jax.Array:
        """``x (..., d) · w (d, ...)`` in fp8, out in ``x.dtype``."""
        lhs, rhs = x.reshape(-1, x.shape[-1]), w.astype(x.dtype).reshape(w.shape[0], -1)
        y = fp8_ops.fp8_scaled_dot_general(
            lhs, rhs, (((1,), (0,)), ((), ())), preferred_element_type=x.dtype,
            lhs_scale=self.input_scale[...], rhs_scale=self.kernel_scale[...],
            grad_scale=self.grad_scale[...], lhs_amax_history=self.input_amax[...],
            rhs_amax_history=self.kernel_amax[...], grad_amax_history=self.grad_amax[...],
            quantize_compute_type=jnp.float32)
        return y.reshape(*x.shape[:-1], *w.shape[1:])


def fp8_scalings(count: int, projection_dtype: str | None):
    """``count`` ``Fp8Scaling``s for ``projection_dtype="fp8"``, else ``None``."""
    if projection_dtype is None:
        return None
    if projection_dtype != "fp8":
        raise ValueError(f"projection_dtype={projection_dtype!r}: expected one of "
                         f"{PROJECTION_DTYPES}")
    return nnx.List([Fp8Scaling() for _ in range(count)])


def project(x: jax.Array, w: jax.Array, scalings, index: int) -> jax.Array:
    """``x (..., d) · w (d, ...)``: by ``scalings[index]`` in fp8, or in ``x.dtype``."""
    if scalings is None:
        return jnp.tensordot(x, w.astype(x.dtype), axes=1)
    return scalings[index].dot(x, w)
