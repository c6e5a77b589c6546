"""``srms_norm`` and ``srms_norm_gate``: SRMSNorm (and its product with the token
mixer's gate) in one pass over the rows each way (kernels.py), behind
``jax.custom_vjp``. The forward keeps its inputs and each row's float32 ``rstd``
(4 bytes a row) for the backward, which reads them once and writes the gradients in
one kernel; XLA's norm and its autodiff make about ten passes over the rows.

Any leading dims are flattened into rows (a free reshape). Reverse mode only (a
custom_vjp): ``jax.jvp`` through these raises jax's ``TypeError``.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from pallas_kernels.norms import kernels
from pallas_kernels.norms.kernels import MAX_WIDTH, Launch, NormConfig

BACKENDS = ("pallas", "interpret")
SUPPORTED_DTYPES = ("float16", "bfloat16", "float32")


def _check_array(name: str, x) -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"{name} is a {type(x).__name__}: expected an array")
    if jnp.dtype(x.dtype).name not in SUPPORTED_DTYPES:
        raise ValueError(f"{name} has dtype {x.dtype}: expected one of {SUPPORTED_DTYPES}")
    width = x.shape[-1] if x.ndim else None
    if width is None or width < 1 or width & (width - 1) or width > MAX_WIDTH:
        raise ValueError(f"{name} has shape {tuple(x.shape)}: expected (..., width) with the "
                         f"width a power of two <= {MAX_WIDTH} (one Triton block a row)")


def check_arguments(arrays: dict, eps, backend, config) -> None:
    """A ``ValueError`` naming the argument, its value and what was expected, before
    anything is traced."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
    if config is not None and not isinstance(config, NormConfig):
        raise ValueError(f"config={config!r}: expected a NormConfig or None")
    if (isinstance(eps, bool) or not isinstance(eps, (int, float))
            or not math.isfinite(eps) or eps < 0):
        raise ValueError(f"eps={eps!r}: expected a finite number >= 0 (a Python number: "
                         "it is compiled into the kernels)")
    for name, x in arrays.items():
        _check_array(name, x)
    (first, a), *rest = arrays.items()
    for name, b in rest:
        if b.shape != a.shape or b.dtype != a.dtype:
            raise ValueError(f"{first} is {a.dtype}{list(a.shape)} and {name} "
                             f"{b.dtype}{list(b.shape)}: expected one shape and dtype")


def _launch(x, eps: float, backend: str, config: NormConfig | None) -> Launch:
    rows = math.prod(x.shape[:-1])
    return Launch.of(rows, x.shape[-1], eps, backend == "interpret", config or NormConfig())


def srms_norm(x: jax.Array, eps: float = 1e-6, *, backend: str = "pallas",
              config: NormConfig | None = None) -> jax.Array:
    """SRMSNorm of ``x (..., width)`` over its last axis: ``x · rsqrt(mean(x²) + eps)``
    in float32, returned in ``x.dtype`` (pallas_kernels.norms.reference's).

    Args:
      x: float16, bfloat16 or float32; the width a power of two <= ``MAX_WIDTH``.
      eps: a Python number >= 0.
      backend: ``"pallas"`` (GPU, Triton lowering) or ``"interpret"`` (the same kernels,
        interpreted, any platform).
      config: the launch (``NormConfig``); ``None`` picks by the width.
    """
    check_arguments({"x": x}, eps, backend, config)
    if x.size == 0:
        return x
    launch = _launch(x, eps, backend, config)
    return _norm(x.reshape(launch.rows, launch.width), launch).reshape(x.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _norm(x, launch: Launch):
    return kernels.norm_forward(x, launch, with_rstd=False)[0]


def _norm_fwd(x, launch: Launch):
    y, rstd = kernels.norm_forward(x, launch, with_rstd=True)
    return y, (x, rstd)


def _norm_bwd(launch: Launch, residuals, dy):
    x, rstd = residuals
    return (kernels.norm_backward(x, rstd, dy.astype(x.dtype), launch),)


_norm.defvjp(_norm_fwd, _norm_bwd)


def srms_norm_gate(o: jax.Array, u: jax.Array, eps: float = 1e-6, *, backend: str = "pallas",
                   config: NormConfig | None = None) -> jax.Array:
    """``srms_norm(o) · u`` in one kernel (TNL's token mixer output: the op's output
    normed, times the gate ``u``), in ``o.dtype``; the norm is not rounded to ``o.dtype``
    before the product (the reference's is: they differ by that rounding).

    Args:
      o, u: one shape ``(..., width)`` and one dtype (as ``srms_norm``'s ``x``).
      eps, backend, config: as ``srms_norm``'s.
    """
    check_arguments({"o": o, "u": u}, eps, backend, config)
    if o.size == 0:
        return o
    launch = _launch(o, eps, backend, config)
    flat = lambda t: t.reshape(launch.rows, launch.width)
    return _gate(flat(o), flat(u), launch).reshape(o.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _gate(o, u, launch: Launch):
    return kernels.gate_forward(o, u, launch, with_rstd=False)[0]


def _gate_fwd(o, u, launch: Launch):
    z, rstd = kernels.gate_forward(o, u, launch, with_rstd=True)
    return z, (o, u, rstd)


def _gate_bwd(launch: Launch, residuals, dz):
    o, u, rstd = residuals
    return kernels.gate_backward(o, u, rstd, dz.astype(o.dtype), launch)


_gate.defvjp(_gate_fwd, _gate_bwd)
