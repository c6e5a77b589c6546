"""The naive fused linear + cross-entropy, for tests: the whole ``(tokens, vocab)``
float32 logits made at once with plain ``jnp``."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def reference_cross_entropy(h: jax.Array, w: jax.Array,
                            targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(losses (N,) float32, correct (N,) bool)`` of ``logits = h wᵀ`` (float32
    accumulation): ``logsumexp(logits) - logits[target]`` and whether the first largest
    logit is the target's. A negative target is ignored: loss 0, not correct."""
    logits = jnp.einsum("nd,vd->nv", h, w, preferred_element_type=jnp.float32,
                        precision=jax.lax.Precision.HIGHEST)
    valid = targets >= 0
    safe = jnp.where(valid, targets, 0)
    target_logit = jnp.take_along_axis(logits, safe[:, None], axis=1)[:, 0]
    losses = jax.nn.logsumexp(logits, axis=1) - target_logit
    correct = valid & (jnp.argmax(logits, axis=1) == targets)
    return jnp.where(valid, losses, 0.0), correct
