"""SRMSNorm, the only norm of TNL: ``y = x · rsqrt(mean(x², -1) + eps)``, no scale;
and RMSNorm, the same with a learned gain per channel (the LLaMA-style baseline).

``kernel`` (``ModelConfig.norm_kernel``) picks how SRMSNorm runs: ``"xla"`` (the
``jnp`` code below, fused by XLA) or ``"pallas"`` (``pallas_kernels.norms``: one pass
over the rows forward and one backward, the token mixer's gate product inside the
kernel; on a GPU the Triton kernels, elsewhere the same kernels interpreted). RMSNorm
stays on XLA (the config refuses ``pallas`` for the LLaMA-style model)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pallas_kernels import norms as fused_norms
from tnl_jax.model.params import create_param
from tnl_jax.partitioning import require_one_device

SRMS_EPS = 1e-6
NORM_KERNELS = ("xla", "pallas")


def _pallas_backend(kernel: str) -> str:
    """The kernels' backend here: ``pallas`` on a GPU, else ``interpret`` (the platform
    test of lightning attention's default backend); on one device only, as the fused
    loss (``partitioning.require_one_device``)."""
    if kernel not in NORM_KERNELS:
        raise ValueError(f"norm_kernel={kernel!r}: expected one of {NORM_KERNELS}")
    require_one_device(f"norm_kernel={kernel!r}", "norm_kernel='xla'")
    return "pallas" if jax.default_backend() == "gpu" else "interpret"


def srms_norm(x: jax.Array, eps: float = SRMS_EPS, kernel: str = "xla") -> jax.Array:
    """Computed in float32 and returned in ``x.dtype`` (as the published code does)."""
    if kernel != "xla":
        return fused_norms.srms_norm(x, eps, backend=_pallas_backend(kernel))
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype)


def srms_norm_gate(o: jax.Array, u: jax.Array, eps: float = SRMS_EPS,
                   kernel: str = "xla") -> jax.Array:
    """``srms_norm(o) · u`` (the token mixer's output times its gate), ``o`` and ``u``
    of one shape and dtype; ``pallas`` does both in one kernel."""
    if kernel != "xla":
        return fused_norms.srms_norm_gate(o, u, eps, backend=_pallas_backend(kernel))
    return srms_norm(o, eps) * u


class SRMSNorm(nnx.Module):
    """Simple RMS norm over the last axis; no parameters. ``kernel``: ``NORM_KERNELS``."""

    def __init__(self, eps: float = SRMS_EPS, kernel: str = "xla"):
        self.eps = eps
        self.kernel = kernel

    def __call__(self, x: jax.Array) -> jax.Array:
        return srms_norm(x, self.eps, self.kernel)


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
              kernel: str = "xla", rngs: nnx.Rngs) -> nnx.Module:
    """TNL's ``SRMSNorm`` (by ``kernel``) or, with ``gain``, an ``RMSNorm`` over
    ``features`` (XLA's only: ``kernel`` must be ``"xla"``)."""
    if kernel not in NORM_KERNELS:
        raise ValueError(f"norm_kernel={kernel!r}: expected one of {NORM_KERNELS}")
    if gain and kernel != "xla":
        raise ValueError(f"norm_kernel={kernel!r} is SRMSNorm's (no gain): RMSNorm with a "
                         "gain (the LLaMA-style model) runs on XLA; expected 'xla'")
    return RMSNorm(features, param_dtype=param_dtype, rngs=rngs) if gain else SRMSNorm(
        kernel=kernel)
