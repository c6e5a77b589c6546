"""``ModelConfig.mlp_product="stacked"``: the MLP's ``x W₁, x W₂`` as one product over the
stacked weights gives the outputs and gradients of two products (``split``), in the
block and in a model under each remat policy that names the products; with fp8 it is
refused. The same under a mesh: tests/model/test_sharded_model.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.model.compiled_memory import gradient_temp_bytes
from tests.tolerances import BF16_TOL, F32_TOL, rel_err
from tnl_jax.model import ModelConfig, create_model
from tnl_jax.model.channel_mixer import SGLU, sglu


def block_inputs(rng, dtype):
    """x ``(3, 7, 32)`` (ragged rows and tokens), W₁, W₂ ``(32, 48)``, W₃ ``(48, 32)``."""
    draw = lambda *shape: jnp.asarray(rng.normal(0, 0.5, shape), dtype)
    return draw(3, 7, 32), draw(32, 48), draw(32, 48), draw(48, 32)


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("dtype, tol", [(jnp.float32, F32_TOL), (jnp.bfloat16, BF16_TOL)])
def test_stacked_gives_the_outputs_and_gradients_of_split(rng, activation, dtype, tol):
    args = block_inputs(rng, dtype)
    cotangent = jnp.asarray(rng.normal(size=(3, 7, 32)), jnp.float32)

    def run(product):
        def f(*args):
            return jnp.sum(sglu(*args, activation=activation, product=product)
                           .astype(jnp.float32) * cotangent)
        return jax.value_and_grad(f, argnums=range(4))(*args)

    (value, grads), (ref, ref_grads) = run("stacked"), run("split")
    assert rel_err(value, ref) <= tol
    for name, g, r in zip(["x", "w1", "w2", "w3"], grads, ref_grads):
        assert g.dtype == dtype and rel_err(g, r) <= tol, name


def test_stacked_is_one_product_for_both_weights(rng):
    x, w1, w2, w3 = block_inputs(rng, jnp.float32)
    count = lambda product: str(jax.make_jaxpr(
        lambda x: sglu(x, w1, w2, w3, product=product))(x)).count("dot_general")
    assert (count("split"), count("stacked")) == (3, 2)


@pytest.mark.parametrize("remat", ["projections", "none"])
def test_a_model_with_stacked_products_trains_as_with_split(small_model, rng, remat):
    """An LRPE layer, a softmax layer and a linear one: the loss and every gradient."""
    model = small_model(0, std=0.1, decoder_layers=3, architecture="hybrid",
                        softmax_every=2, remat=remat)
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (2, 24)))
    _, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_and_grads(product):
        graphdef = nnx.graphdef(create_model(model.cfg.replace(mlp_product=product),
                                             nnx.Rngs(0)))

        def loss(params):
            logits = nnx.merge(graphdef, params, jax.tree.map(lambda a: a, rest))(ids)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 3])
        return jax.jit(jax.value_and_grad(loss))(params)

    (value, grads), (ref, ref_grads) = loss_and_grads("stacked"), loss_and_grads("split")
    assert rel_err(value, ref) <= F32_TOL
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        assert rel_err(g, r) <= F32_TOL


def test_stacked_keeps_what_split_keeps_under_projections(small_model):
    """``projections`` names the stacked product as it names the two: what a layer keeps
    for the backward is the same (the compiled gradient's temporaries grow by the same
    bytes per layer; the linear op stood in). Stacked needs one transient more, the
    product's whole gradient for its one backward product: a constant, not per layer."""
    def temp(product, layers):
        return gradient_temp_bytes(small_model(
            0, decoder_embed_dim=128, decoder_attention_heads=2, glu_dim=256,
            remat="projections", mlp_product=product, decoder_layers=layers), 512)

    # 3 and 6 layers: an LRPE layer, then a scan of 2 or 5 (a scan of one would be no loop).
    per_layer = {p: (temp(p, 6) - temp(p, 3)) / 3 for p in ("split", "stacked")}
    assert abs(per_layer["stacked"] - per_layer["split"]) <= 0.01 * per_layer["split"], per_layer


def test_stacked_with_fp8_or_an_unknown_product_is_refused():
    with pytest.raises(ValueError, match="mlp_product='stacked' with projection_dtype='fp8'"):
        ModelConfig(mlp_product="stacked", projection_dtype="fp8")
    with pytest.raises(ValueError, match="product='stacked' with projection_dtype='fp8'"):
        SGLU(8, 16, projection_dtype="fp8", product="stacked", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"product='joined', expected one of \('split'"):
        SGLU(8, 16, product="joined", rngs=nnx.Rngs(0))
    x = jnp.asarray(np.ones((2, 8)), jnp.float32)
    with pytest.raises(ValueError, match=r"product='one': expected one of"):
        sglu(x, jnp.ones((8, 4)), jnp.ones((8, 4)), jnp.ones((4, 8)), product="one")
