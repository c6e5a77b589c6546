"""``scan_unroll``: the layer stacks' scan with several (or all) layers per iteration
gives the outputs and gradients of one layer per iteration."""
import jax
import jax.numpy as jnp
from flax import nnx

from tests.tolerances import rel_err
from tnl_jax.model import create_model

# An LRPE layer, then a run of two: unroll 2 inlines the run.
LAYERS = dict(decoder_layers=3, remat="projections")


def loss_and_grads(model, unroll: int, ids):
    graphdef = nnx.graphdef(create_model(model.cfg.replace(scan_unroll=unroll), nnx.Rngs(0)))
    _, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        merged = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
        logits = merged(ids)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0]), logits

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def test_unrolled_layers_give_the_outputs_and_gradients_of_the_loop(small_model, rng):
    model = small_model(0, std=0.1, **LAYERS)
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (2, 24)))
    (value, logits), grads = loss_and_grads(model, 1, ids)
    for unroll in (2,):
        (other_value, other_logits), other_grads = loss_and_grads(model, unroll, ids)
        assert rel_err(other_logits, logits) <= 1e-5, unroll
        assert rel_err(other_value, value) <= 1e-5, unroll
        for g, ref in zip(jax.tree.leaves(other_grads), jax.tree.leaves(grads), strict=True):
            assert rel_err(g, ref) <= 1e-4, unroll

