"""Remat policies by name: each gives the loss and gradients of ``none``; each is
applied per decoder layer (inside the layers' scan); a bad name names the nearest."""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from tests.tolerances import rel_err
from tnl_jax.model import ModelConfig, create_model
from tnl_jax.model.remat import ATTENTION_NAMES, REMAT_POLICIES

# An LRPE layer, then a softmax one: both token mixers name their op's inputs and output.
LAYERS = dict(decoder_layers=2, architecture="hybrid", softmax_every=2)


def loss_and_grads(model, remat: str, ids):
    graphdef = nnx.graphdef(create_model(model.cfg.replace(remat=remat), nnx.Rngs(0)))
    _, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        merged = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
        return jnp.mean(jax.nn.logsumexp(merged(ids), -1))

    return jax.jit(jax.value_and_grad(loss))(params)


def test_every_policy_gives_the_loss_and_gradients_of_none(small_model, rng):
    model = small_model(0, std=0.1, **LAYERS)
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (2, 24)))
    value, grads = loss_and_grads(model, "none", ids)
    # The presets' policy, whose backward runs the op's forward again; the others (op_io,
    # projections_op_io: names kept, test_remat_is_per_layer...; the dots ones and full:
    # jax's own) are applied the same way.
    for remat in ("projections",):
        other_value, other_grads = loss_and_grads(model, remat, ids)
        assert rel_err(other_value, value) <= 1e-5, remat
        for g, ref in zip(jax.tree.leaves(other_grads), jax.tree.leaves(grads)):
            assert rel_err(g, ref) <= 1e-4, remat


def sub_jaxprs(eqn):
    """The jaxprs inside an equation's parameters (scan bodies, jit calls, ...)."""
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def scan_bodies(jaxpr):
    for eqn in jaxpr.eqns:
        for inner in sub_jaxprs(eqn):
            if eqn.primitive.name == "scan":
                yield inner
            else:
                yield from scan_bodies(inner)


def test_remat_is_per_layer_and_op_io_names_the_op(small_model):
    """Each layer stack's scan body is one rematerialised layer; under ``op_io`` the
    attention op's inputs and output are the names its policy keeps."""
    model = small_model(0, remat="op_io", **LAYERS)
    ids = jnp.zeros((1, 8), jnp.int32)
    bodies = list(scan_bodies(jax.make_jaxpr(lambda m: m(ids))(model).jaxpr))
    assert len(bodies) == len(model.stacks)
    for body in bodies:
        remats = [e for e in body.eqns if e.primitive.name in ("checkpoint", "remat2")]
        assert len(remats) == 1, [e.primitive.name for e in body.eqns]
        assert remats[0].params["policy"] is REMAT_POLICIES["op_io"]
        text = str(remats[0].params["jaxpr"])
        for name in ATTENTION_NAMES:
            assert f"name={name}" in text


@pytest.mark.parametrize("bad, nearest", [("op-io", "op_io"), ("dots", "dots_saveable"),
                                          ("ful", "full")])
def test_a_bad_policy_names_the_nearest(bad, nearest):
    with pytest.raises(ValueError, match=f"remat='{bad}' is not a remat policy "
                                         f"\\(nearest: '{nearest}'"):
        ModelConfig(remat=bad)
