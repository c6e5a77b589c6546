"""The fused linear + cross-entropy kernels, interpreted, against the naive ``jnp``
reference: losses, top-1 hits and the gradients in ``h`` and ``w``, in float32 and
bfloat16, with a token count, a width and a vocabulary that the blocks do not divide
and an ignored (negative) target."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.cross_entropy import (CrossEntropyConfig, fused_cross_entropy,
                                          reference_cross_entropy)
from tests.tolerances import BF16_TOL, F32_TOL, rel_err

# The smallest blocks: 3 token blocks (the last ragged), 4 vocabulary tiles (the last
# masked), width 40 padded to 48.
TINY = CrossEntropyConfig(token_block=16, vocab_block=16, k_block=16, d_block=16)
# The gradients' walks in larger tiles than the forward's (tokens and vocabulary padded
# to 64): 2 tiles of 32 tokens for dw, 2 of 32 entries for dh.
TINY_WIDE_GRADS = CrossEntropyConfig(token_block=16, vocab_block=16, k_block=16, d_block=16,
                                     dh_vocab_block=32, dw_token_block=32)
TOKENS, WIDTH, VOCAB = 37, 40, 53
IGNORED = 5


def inputs(rng, dtype):
    h = jnp.asarray(rng.normal(size=(TOKENS, WIDTH)), dtype)
    w = jnp.asarray(rng.normal(size=(VOCAB, WIDTH)) * 0.3, dtype)
    targets = rng.integers(0, VOCAB, TOKENS)
    # A third of the targets are the top logit, so that hits are tested too.
    top = np.asarray(jnp.argmax(jnp.einsum("nd,vd->nv", h, w,
                                           preferred_element_type=jnp.float32), axis=1))
    targets[::3] = top[::3]
    targets[IGNORED] = -1
    weights = jnp.asarray(rng.normal(size=TOKENS), jnp.float32)  # A cotangent of the losses.
    return h, w, jnp.asarray(targets, jnp.int32), weights


def loss_and_grads(cross_entropy, h, w, targets, weights):
    def loss(h, w):
        losses, correct = cross_entropy(h, w, targets)
        return jnp.sum(losses * weights), (losses, correct)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(h, w)


# The backward in XLA's products, 20 tokens at a time (3 chunks, the last padded).
TINY_XLA_GRADS = CrossEntropyConfig(token_block=16, vocab_block=16, k_block=16, d_block=16,
                                    xla_grads_tokens=20)


@pytest.mark.parametrize("dtype, tol, config", [(jnp.float32, F32_TOL, TINY),
                                                (jnp.bfloat16, BF16_TOL, TINY_WIDE_GRADS),
                                                (jnp.float32, F32_TOL, TINY_XLA_GRADS)])
def test_fused_matches_the_reference(rng, dtype, tol, config):
    h, w, targets, weights = inputs(rng, dtype)
    fused = lambda h, w, t: fused_cross_entropy(h, w, t, backend="interpret", config=config)
    (_, (losses, correct)), grads = loss_and_grads(fused, h, w, targets, weights)
    (_, (ref_losses, ref_correct)), ref_grads = loss_and_grads(reference_cross_entropy, h, w,
                                                                targets, weights)
    assert losses.shape == (TOKENS,) and losses.dtype == jnp.float32
    assert rel_err(losses, ref_losses) <= tol
    assert losses[IGNORED] == 0 and not correct[IGNORED]
    np.testing.assert_array_equal(correct, ref_correct)
    assert 0 < int(correct.sum()) < TOKENS
    for grad, ref, operand in zip(grads, ref_grads, (h, w)):
        assert grad.dtype == operand.dtype and grad.shape == operand.shape
        assert rel_err(grad, ref) <= tol
    assert not np.any(np.asarray(grads[0][IGNORED], np.float32))  # No gradient: ignored.
