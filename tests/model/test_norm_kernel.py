"""``ModelConfig.norm_kernel="pallas"``: the fused SRMSNorm kernels (interpreted here)
in place of XLA's norms give the loss, gradients and decoded logits of ``"xla"``; the
config refuses it where the kernels cannot serve every norm, and the model refuses it
under a mesh that splits anything."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tolerances import BF16_TOL, F32_TOL, rel_err
from tnl_jax.model import ModelConfig, create_model
from tnl_jax.model.norms import srms_norm

# An LRPE layer and a softmax layer: both token mixers and both pre-norms.
HYBRID = dict(decoder_layers=2, architecture="hybrid", softmax_every=2)


def loss_of(model, norm_kernel: str, ids):
    """``(loss, params)``: the mean token loss of ``params`` (``model``'s) in ``model``
    with its config's ``norm_kernel`` replaced."""
    graphdef = nnx.graphdef(create_model(model.cfg.replace(norm_kernel=norm_kernel),
                                         nnx.Rngs(0)))
    _, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        logits = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))(ids)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 3])

    return loss, params


def loss_and_grads(model, norm_kernel: str, ids):
    loss, params = loss_of(model, norm_kernel, ids)
    return jax.jit(jax.value_and_grad(loss))(params)


def test_pallas_puts_every_srms_norm_in_the_kernels(small_model):
    """The final norm, both layers' two pre-norms and the linear layer's gated output
    norm: six kernels forward, six backward; none with ``xla``."""
    model = small_model(0, **HYBRID)
    ids = jnp.zeros((2, 16), jnp.int32)
    for kernel, calls in (("pallas", 12), ("xla", 0)):
        loss, params = loss_of(model, kernel, ids)
        assert str(jax.make_jaxpr(jax.grad(loss))(params)).count("pallas_call[") == calls


def test_pallas_norms_give_the_loss_and_gradients_of_xla(small_model, rng):
    model = small_model(0, std=0.1, **HYBRID)
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (2, 24)))
    value, grads = loss_and_grads(model, "xla", ids)
    fused_value, fused_grads = loss_and_grads(model, "pallas", ids)
    assert rel_err(fused_value, value) <= F32_TOL
    for g, ref in zip(jax.tree.leaves(fused_grads), jax.tree.leaves(grads), strict=True):
        assert rel_err(g, ref) <= F32_TOL


def test_pallas_norms_with_fp8_projections_in_bfloat16(small_model, rng):
    """The fp8 path's products feed the fused gate kernel in bfloat16: the loss within
    bfloat16's bound of XLA's norms, every gradient finite."""
    model = small_model(0, std=0.1, decoder_layers=1, dtype="bfloat16", projection_dtype="fp8")
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (2, 16)))
    value, _ = loss_and_grads(model, "xla", ids)
    fused_value, fused_grads = loss_and_grads(model, "pallas", ids)
    assert rel_err(fused_value, value) <= BF16_TOL
    assert all(np.all(np.isfinite(np.asarray(g, np.float32)))
               for g in jax.tree.leaves(fused_grads))


def test_decoding_with_pallas_norms_gives_the_logits_of_xla(small_model, rng):
    """Prefill, then one decode step (the token mixer's gate norm on ``(B, d)``)."""
    model = small_model(0, std=0.1, decoder_layers=1)
    fused = create_model(model.cfg.replace(norm_kernel="pallas"), nnx.Rngs(0))
    nnx.update(fused, nnx.state(model, nnx.Param))
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (2, 8)))
    kv_valid = jnp.ones((2, 9), bool)

    def decode(m):
        logits, caches = m.prefill(ids, None, None, cache_size=9)
        token = jnp.argmax(logits, -1)
        step, _ = m.decode_step(token, jnp.full((2,), 8), caches, jnp.asarray(8), kv_valid)
        return logits, step

    for out, ref in zip(nnx.jit(decode)(fused), nnx.jit(decode)(model), strict=True):
        assert rel_err(out, ref) <= F32_TOL


@pytest.mark.parametrize("changes, says", [
    (dict(norm_kernel="triton"), ("norm_kernel='triton'", "('xla', 'pallas')")),
    (dict(norm_kernel="pallas", decoder_embed_dim=48, decoder_attention_heads=4),
     ("norm_kernel='pallas'", "decoder_embed_dim=48", "power-of-two width")),
    (dict(norm_kernel="pallas", architecture="llama"),
     ("norm_kernel='pallas'", "architecture='llama'", "norm_kernel='xla'")),
])
def test_the_config_refuses_what_the_kernels_cannot_serve(changes, says):
    with pytest.raises(ValueError) as error:
        ModelConfig(**changes)
    for words in says:
        assert words in str(error.value)


def test_pallas_norms_refuse_a_mesh_that_splits():
    """Else XLA would gather every operand onto every device (a Pallas call is opaque
    to its partitioner)."""
    x = jax.ShapeDtypeStruct((4, 64), jnp.float32)
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((2,), ("data",))):
        with pytest.raises(ValueError, match=r"norm_kernel='pallas' runs on one device.*'data': 2"):
            jax.eval_shape(lambda x: srms_norm(x, kernel="pallas"), x)
