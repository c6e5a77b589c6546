"""The scorer leaves out the segment mask of one-document rows: the same losses on
every real token (softmax and lightning layers), and the mask kept where a row packs
several documents."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tolerances import rel_err
from tnl_jax.evaluation.scorer import one_document_per_row
from tnl_jax.training.steps import token_losses


def test_one_document_per_row_is_one_id_then_trailing_padding():
    assert one_document_per_row(np.array([[1, 1, 1, 1], [3, 3, 0, 0], [0, 0, 0, 0]]))
    assert not one_document_per_row(np.array([[1, 1, 2, 2]]))  # Two documents.
    assert not one_document_per_row(np.array([[1, 0, 1, 1]]))  # Padding inside.
    assert not one_document_per_row(np.array([[0, 0, 1, 1]]))  # Padding first.


@pytest.mark.parametrize("architecture", ["hybrid", "llama"])
def test_losses_without_the_mask_are_those_with_it_on_real_tokens(small_model, rng,
                                                                  architecture):
    model = small_model(0, architecture=architecture, softmax_every=2)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rows, width, lengths = 3, 37, np.array([37, 20, 5])
    real = np.arange(width)[None, :] < lengths[:, None]
    ids, targets = (jnp.asarray(rng.integers(3, 61, (rows, width)), jnp.int32) for _ in range(2))
    batch = {"input_ids": ids, "targets": targets, "segment_ids": jnp.asarray(real, jnp.int32),
             "positions": jnp.broadcast_to(jnp.arange(width), (rows, width))}
    assert one_document_per_row(np.asarray(batch["segment_ids"]))
    masked, masked_hits = token_losses(graphdef, params, rest, batch, 8)
    unmasked, unmasked_hits = token_losses(
        graphdef, params, rest, {k: v for k, v in batch.items() if k != "segment_ids"}, 8)
    assert rel_err(np.asarray(unmasked)[real], np.asarray(masked)[real]) <= 1e-5
    np.testing.assert_array_equal(np.asarray(unmasked_hits)[real], np.asarray(masked_hits)[real])
    # Packing two documents in a row is what the mask is for: there it changes losses.
    packed = {**batch, "segment_ids": jnp.asarray(np.where(np.arange(width) < 18, 1, 2)
                                                  [None].repeat(rows, 0), jnp.int32)}
    two_docs, _ = token_losses(graphdef, params, rest, packed, 8)
    assert rel_err(np.asarray(two_docs)[0, 18:], np.asarray(unmasked)[0, 18:]) > 1e-3
