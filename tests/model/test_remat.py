"""Remat policies by name: each gives the loss and gradients of ``none``; each is
applied per decoder layer (inside the layers' scan); a bad name names the nearest."""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from tests.model.compiled_memory import gradient_temp_bytes
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
    # The presets' policy, whose backward runs the op's forward again, and mlp_projections
    # (q|k|v recomputed too); the others (op_io, projections_op_io: names kept,
    # test_remat_is_per_layer...; the dots ones and full: jax's own) are applied the same way.
    for remat in ("projections", "mlp_projections"):
        other_value, other_grads = loss_and_grads(model, remat, ids)
        assert rel_err(other_value, value) <= 1e-6, remat  # float32: equal on the CPU
        for g, ref in zip(jax.tree.leaves(other_grads), jax.tree.leaves(grads), strict=True):
            assert rel_err(g, ref) <= 1e-6, remat


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


def checkpoints(jaxpr):
    """The ``checkpoint`` equations in ``jaxpr`` and the jaxprs inside it."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("checkpoint", "remat2"):
            yield eqn
        for inner in sub_jaxprs(eqn):
            yield from checkpoints(inner)


def test_remat_is_per_layer_and_op_io_names_the_op(small_model):
    """Each layer stack's scan body is one rematerialised layer: in a loop, a plain
    ``checkpoint``; in a scan of one iteration (here TNL's LRPE layer 0; the two-layer
    stack after it unrolled whole), one inside a ``custom_vjp`` that recomputes after
    its cotangent. Under ``op_io`` the attention op's inputs and output are the names
    its policy keeps."""
    # scan_unroll, and per stack whether it recomputes after its cotangent
    for unroll, after_cotangent in ((1, [True, False]), (2, [True, True])):
        model = small_model(0, remat="op_io", scan_unroll=unroll)
        ids = jnp.zeros((1, 8), jnp.int32)
        bodies = list(scan_bodies(jax.make_jaxpr(lambda m: m(ids))(model).jaxpr))
        assert len(bodies) == len(model.stacks) == 2
        for body, vjp in zip(bodies, after_cotangent, strict=True):
            names = [e.primitive.name for e in body.eqns]
            assert ("custom_vjp_call" in " ".join(names)) == vjp, names
            remats = list(checkpoints(body))  # The jaxpr's scan body is one layer.
            assert len(remats) == 1, names
            for remat in remats:
                assert remat.params["policy"] is REMAT_POLICIES["op_io"]
                text = str(remat.params["jaxpr"])
                for name in ATTENTION_NAMES:
                    assert f"name={name}" in text


def test_a_one_layer_stack_keeps_no_more_than_a_layer_in_a_loop(small_model):
    """TNL's LRPE layer 0 is a stack of its own, one iteration of its scan: its remat
    must still hold (XLA would else recompute it with the forward and keep everything
    it makes: 1.48x the memory here). The compiled gradient's temporaries against the
    same model without LRPE (every layer in one loop), the ops stood in for."""
    def temp(lrpe):
        return gradient_temp_bytes(small_model(
            0, decoder_embed_dim=128, decoder_attention_heads=2, glu_dim=256,
            remat="projections", linear_use_lrpe_list=lrpe), 512)

    assert temp([1, 0, 0]) <= 1.05 * temp([0, 0, 0])


@pytest.mark.parametrize("bad, nearest", [("op-io", "op_io"), ("dots", "dots_saveable"),
                                          ("ful", "full")])
def test_a_bad_policy_names_the_nearest(bad, nearest):
    with pytest.raises(ValueError, match=f"remat='{bad}' is not a remat policy "
                                         f"\\(nearest: '{nearest}'"):
        ModelConfig(remat=bad)


def live_calls(jaxpr, primitive: str = "pallas_call") -> int:
    """Equations of ``primitive`` whose results are used (dead code, which XLA drops, is
    not counted), in ``jaxpr`` and the jaxprs inside it."""
    live = {v for v in jaxpr.outvars if isinstance(v, jax.extend.core.Var)}
    count = 0
    for eqn in reversed(jaxpr.eqns):
        if not (eqn.effects or any(v in live for v in eqn.outvars)):
            continue
        live.update(v for v in eqn.invars if isinstance(v, jax.extend.core.Var))
        count += eqn.primitive.name == primitive
        count += sum(live_calls(inner, primitive) for inner in sub_jaxprs(eqn))
    return count


# Pallas kernels (interpreted), 8 chunks of 16 rows: two sequence splits, so the
# forward's state-only pass runs too.
KERNEL_LAYERS = dict(attention_backend="interpret", decoder_layers=1, linear_use_lrpe_list=[])
KERNEL_TOKENS = 128


def test_projections_op_out_keeps_the_op_forward_out_of_the_backward(small_model):
    """Under ``projections`` the backward runs the op's forward and state-only pass
    again; under ``projections_op_out`` the gradient launches the op's kernels exactly
    as often as without remat (``none``)."""
    ids = jnp.zeros((1, KERNEL_TOKENS), jnp.int32)
    counts = {}
    for remat in ("none", "projections", "projections_op_out"):
        model = small_model(0, remat=remat, **KERNEL_LAYERS)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        graphdef = nnx.graphdef(model)

        def loss(params):
            merged = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
            return jnp.mean(merged(ids))

        counts[remat] = live_calls(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    # none: state pass, forward, dS pass, dq, dk, dv; projections: forward and state
    # pass once more.
    assert counts == {"none": 6, "projections": 8, "projections_op_out": 6}, counts


def test_projections_op_out_gives_the_gradients_of_none(small_model, rng):
    """The kernels under ``projections_op_out`` against the ``xla`` backend without remat."""
    model = small_model(0, std=0.1, **KERNEL_LAYERS)
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (1, KERNEL_TOKENS)))
    value, grads = loss_and_grads(model, "projections_op_out", ids)
    reference = small_model(0, std=0.1, **{**KERNEL_LAYERS, "attention_backend": "xla"})
    ref_value, ref_grads = loss_and_grads(reference, "none", ids)
    assert rel_err(value, ref_value) <= 1e-5
    for g, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        assert rel_err(g, ref) <= 1e-4
