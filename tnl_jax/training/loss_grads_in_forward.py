"""The training loss with its gradients made in the forward pass (``loss_kernel=
grads_in_forward``): three of the head's matmuls per token instead of four.

The chunked loss (``losses.cross_entropy``) makes each chunk's logits in the forward,
then, in the backward, makes them again and takes the two products of the gradient
(``dh = dlogits W`` and ``dW = dlogitsᵀ h``). Its per-token cotangent is not known in the
forward. But the step differentiates one number, ``Σ_t w_t · loss_t`` (``w``: the loss
mask), so ``dlogits_t = w_t · (softmax(logits_t) - onehot(target_t))`` is known while
the logits are: each chunk makes its logits once, its loss, top-1 hit and both
products, and drops the logits (as Liger's fused linear cross-entropy does). The
backward only scales the kept ``dh (B, T, d)`` and ``dW (V, d)`` by the scalar's
cotangent. Saved per step: the recomputed logits (a ``2·d·V`` matmul per token, and
their softmax's passes over ``(tokens, V)`` float32); kept: ``dh`` in the compute
dtype and ``dW`` in float32.

Chunks, shards and padding are the chunked loss's (``losses.token_chunks``): the same
tokens per device, no device needs another's, and the weight's gradient is summed on
each device over the chunks and reduced across devices once. The numbers are the
chunked loss's: ``dlogits`` cast to the compute dtype for the two products (as
``head_matmul``'s backward does), ``dW`` summed over chunks in float32.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tnl_jax.model.head_matmul import head_matmul
from tnl_jax.partitioning import ACTIVATION, constrain
from tnl_jax.training import losses


def weighted_cross_entropy(normed: jax.Array, weight: jax.Array, targets: jax.Array,
                           token_weights: jax.Array, chunk_tokens: int = losses.AUTO
                           ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(Σ token_weights · losses, losses (B, T), correct (B, T))``: ``losses.
    cross_entropy``'s operands and outputs, and the weighted sum, whose gradient
    (against ``normed`` and ``weight``) is made in the forward. Only the sum carries a
    gradient: the per-token losses are for logging (``stop_gradient``)."""
    if token_weights.shape != targets.shape:
        raise ValueError(f"token_weights has shape {token_weights.shape}: expected the "
                         f"targets' {targets.shape}")
    chunks = losses.token_chunks(normed, weight, targets, chunk_tokens)
    total, token_losses, correct = _weighted(chunks, normed, weight, targets,
                                             token_weights.astype(jnp.float32))
    return total, jax.lax.stop_gradient(token_losses), correct


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _weighted(chunks: losses.TokenChunks, normed, weight, targets, token_weights):
    return _forward(chunks, normed, weight, targets, token_weights)[0]


def _forward(chunks: losses.TokenChunks, normed, weight, targets, token_weights):
    rows, pieces = chunks.groups
    # The weight's copy on each device (see losses._scanned): its gradient is summed
    # on the device over the chunks, and across devices once, after the loop.
    weights = constrain(jnp.broadcast_to(weight.astype(normed.dtype),
                                         (rows, pieces, *weight.shape)), losses.GROUP_WEIGHTS)

    def chunk(dw, xs):  # (B, pieces * length, d), (B, pieces * length) twice
        h, t, w = xs
        grouped = (rows, h.shape[0] // rows, pieces, chunks.length)
        h = constrain(h.reshape(*grouped, -1), losses.GROUP_TOKENS)
        logits = head_matmul("rbpld,rpvd->rbplv", h, weights)
        logits = constrain(logits, (*losses.GROUP_TOKENS[:-1], "vocab"))
        target, w = t.reshape(grouped), w.reshape(grouped)
        lse = jax.nn.logsumexp(logits, -1)
        token_losses = lse - jnp.take_along_axis(logits, target[..., None], -1)[..., 0]
        correct = jnp.argmax(logits, -1) == target
        dlogits = (jnp.exp(logits - lse[..., None])
                   - jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype)) * w[..., None]
        dlogits = dlogits.astype(h.dtype)
        dh = jnp.einsum("rbplv,rpvd->rbpld", dlogits, weights)
        dw = dw + jnp.einsum("rbplv,rbpld->rpvd", dlogits, h,
                             preferred_element_type=jnp.float32)
        return dw, (jnp.sum(token_losses * w), token_losses.reshape(t.shape),
                    correct.reshape(t.shape), dh.reshape(xs[0].shape))

    xs = (constrain(chunks.split(normed), (None, *ACTIVATION)),
          *(constrain(chunks.split(x), (None, *ACTIVATION[:2]))
            for x in (targets, token_weights)))
    dw0 = constrain(jnp.zeros((rows, pieces, *weight.shape), jnp.float32), losses.GROUP_WEIGHTS)
    dw, (totals, token_losses, correct, dh) = jax.lax.scan(chunk, dw0, xs)
    dw = dw.sum((0, 1)).astype(weight.dtype)
    dh = chunks.merge(dh).astype(normed.dtype)
    outputs = (totals.sum(), chunks.merge(token_losses), chunks.merge(correct))
    return outputs, (dh, dw)


def _backward(chunks, residuals, cotangents):
    dh, dw = residuals
    scale = cotangents[0]  # The per-token losses carry none (stop_gradient).
    # Targets and token weights: no gradient (None is a zero cotangent).
    return (scale * dh).astype(dh.dtype), (scale * dw).astype(dw.dtype), None, None


_weighted.defvjp(_forward, _backward)
