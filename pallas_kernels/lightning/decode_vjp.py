"""The decode step's Pallas kernel (triton/decode_step.py) behind ``jax.custom_vjp``.

Decode is not trained through, but a step must stay differentiable like the rest of
the op: the backward is ``jax.vjp`` of the XLA step (xla_backend.step) at the saved
inputs, which is exact and cheap for one token. Head dims are padded to the Triton
tile sizes (``tuning.padded_head_dim``) with zeros, which add nothing to the state or
the output.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.lightning import tuning, xla_backend
from pallas_kernels.lightning.triton import decode_step
from pallas_kernels.lightning.validation import reverse_mode_only


def _padded(x: jax.Array, *widths: int) -> jax.Array:
    """``x`` with its last ``len(widths)`` axes zero-padded to ``widths``."""
    pads = [(0, 0)] * (x.ndim - len(widths)) + [
        (0, w - n) for n, w in zip(x.shape[-len(widths):], widths)]
    return jnp.pad(x, pads) if any(p for _, p in pads) else x


def _kernel_step(q, k, v, decay, state, interpret: bool):
    q, k, v, decay, state = reverse_mode_only("interpret" if interpret else "pallas",
                                              (q, k, v, decay, state))
    dk, dv = q.shape[-1], v.shape[-1]
    dk_pad, dv_pad = tuning.padded_head_dim(dk), tuning.padded_head_dim(dv)
    lam = jnp.exp(-decay.astype(jnp.float32))
    o, new_state = decode_step.decode_step(
        _padded(q, dk_pad), _padded(k, dk_pad), _padded(v, dv_pad), lam,
        _padded(state.astype(jnp.float32), dk_pad, dv_pad), interpret=interpret)
    return o[..., :dv], new_state[..., :dk, :dv]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def kernel_step(q: jax.Array, k: jax.Array, v: jax.Array, decay: jax.Array, state: jax.Array,
                interpret: bool) -> tuple[jax.Array, jax.Array]:
    """As ``xla_backend.step`` (``o`` in ``q.dtype``, the new state float32), from one
    kernel launch."""
    return _kernel_step(q, k, v, decay, state, interpret)


def _forward(q, k, v, decay, state, interpret):
    return _kernel_step(q, k, v, decay, state, interpret), (q, k, v, decay, state)


def _backward(interpret, inputs, cotangents):
    del interpret
    _, vjp = jax.vjp(xla_backend.step, *inputs)
    return vjp(cotangents)


kernel_step.defvjp(_forward, _backward)
