"""The fused cross-entropy's backward in XLA's products instead of the Pallas walks:
the logits made again ``chunk`` tokens at a time (cuBLAS on a GPU), their gradient from
the forward's logsumexp (no reduction), then ``dh`` of the chunk and its share of
``dw``. Holds one chunk's ``(chunk, vocab)`` logits at a time."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _precision(dtype) -> jax.lax.Precision | None:
    return jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None


def grads(h, w, targets, lse, dloss, *, vocab: int, chunk: int) -> tuple[jax.Array, jax.Array]:
    """``(dh (Np, dp), dw (Vp, dp))`` float32 from padded operands (kernels.py's)."""
    tokens, width = h.shape
    count = -(-tokens // chunk)
    pad = count * chunk - tokens

    def chunks(x, fill=0):
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=fill)
        return x.reshape(count, chunk, *x.shape[1:])

    precision = _precision(h.dtype)
    ids = jnp.arange(w.shape[0], dtype=jnp.int32)

    def step(dw, xs):
        hc, tc, lc, gc = xs
        logits = jnp.einsum("nd,vd->nv", hc, w, preferred_element_type=jnp.float32,
                            precision=precision)
        probs = jnp.where(ids < vocab, jnp.exp(logits - lc[:, None]), 0.0)
        g = ((probs - (ids == tc[:, None])) * gc[:, None]).astype(h.dtype)
        dh = jnp.einsum("nv,vd->nd", g, w, preferred_element_type=jnp.float32,
                        precision=precision)
        dw = dw + jnp.einsum("nv,nd->vd", g, hc, preferred_element_type=jnp.float32,
                             precision=precision)
        return dw, dh

    dw, dh = jax.lax.scan(step, jnp.zeros(w.shape, jnp.float32),
                          (chunks(h), chunks(targets, -1), chunks(lse), chunks(dloss)))
    return dh.reshape(count * chunk, width)[:tokens], dw
