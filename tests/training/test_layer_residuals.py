"""benchmarks/training/layer_residuals.py reads jax's printed residuals into bytes; what a
TNL layer keeps per token against a softmax layer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import checkpoint_name

from benchmarks.training.layer_residuals import layer_loss, saved_per_token, saved_values
from benchmarks.training.standin_ops import standin_op, standin_ops
from tests.conftest import SMALL_MODEL
from tnl_jax.model import ModelConfig


def test_saved_values_are_the_named_products_bytes(rng):
    w = jnp.asarray(rng.normal(size=(8, 24)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(5, 8)), jnp.bfloat16)

    def f(w, x):
        kept = checkpoint_name(x @ w.astype(jnp.bfloat16), "kept")
        return jnp.sum(jnp.sin(kept * 2).astype(jnp.float32))

    policy = jax.checkpoint_policies.save_only_these_names("kept")
    found = saved_values(jax.checkpoint(f, policy=policy), w, x)
    assert (5 * 24 * 2, "named 'kept'") in [(size, source.split(" from ")[0])
                                            for size, source in found]
    assert (8 * 24 * 4, "from the argument w") in found


# One layer of each token mixer: bf16, width d, MLP width m (the hand counts below).
D, M = 32, 48
BYTES = 2  # bfloat16


def layer_config(architecture: str, remat: str) -> ModelConfig:
    return ModelConfig(**{**SMALL_MODEL, "architecture": architecture, "remat": remat,
                          "dtype": "bfloat16", "decoder_embed_dim": D, "glu_dim": M})


@pytest.mark.parametrize("remat, kept", [
    ("projections", {"named 'input_projection'": 3 * D, "named 'mlp_projection'": 2 * M}),
    ("mlp_projections", {"named 'mlp_projection'": 2 * M}),
])
def test_a_tnl_layer_keeps_per_token_what_a_softmax_layer_keeps(remat, kept):
    """Per token, a TNL layer (the first, with LRPE, and a plain one) keeps exactly the
    named products and its input ``x``, by hand count, as a softmax layer does: TNL's
    gate and ``silu`` are recomputed. Besides, each keeps the batch's int32 ids it
    reads (segment ids; positions for LRPE and RoPE): one copy for all layers."""
    expected = {"from the argument x": D * BYTES,
                **{name: width * BYTES for name, width in kept.items()}}
    ids = {"from the argument segment_ids": 4, "from the argument positions": 4}
    for architecture, kind in (("tnl", "lrpe"), ("tnl", "linear"), ("softmax", "softmax")):
        found = saved_per_token(layer_config(architecture, remat), kind, 2, 16)
        activations = {k: v for k, v in found.items() if k not in ids}
        assert activations == expected, (kind, found)
        assert all(ids[k] == v for k, v in found.items() if k in ids), (kind, found)


def test_the_stand_in_op_has_the_gradients_of_its_formula(rng):
    """standin_ops.py: the custom VJP against jax's own derivative of ``v · Σ(q ⊙ k)``;
    within ``standin_ops()`` a TNL layer's loss changes (the op is replaced)."""
    q, k = (jnp.asarray(rng.normal(size=(2, 8, 3, 6)), jnp.float32) for _ in range(2))
    v, weights = (jnp.asarray(rng.normal(size=(2, 8, 3, 5)), jnp.float32) for _ in range(2))
    formula = lambda q, k, v: v * jnp.sum(q * k, -1, keepdims=True)
    loss = lambda op: lambda *args: jnp.sum(op(*args) * weights)
    got = jax.grad(loss(standin_op), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(loss(formula), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    params, rest, f = layer_loss(layer_config("tnl", "projections"), "linear")
    concrete = lambda tree: jax.tree.map(lambda a: jnp.asarray(
        rng.normal(0, 0.3, a.shape), a.dtype), tree)
    params, rest = concrete(params), jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype), rest)
    x = jnp.asarray(rng.normal(size=(1, 16, D)), jnp.bfloat16)
    ids = jnp.broadcast_to(jnp.arange(16, dtype=jnp.int32), (1, 16))
    real = f(params, rest, x, jnp.ones_like(ids), ids)
    with standin_ops():
        stand_in = f(params, rest, x, jnp.ones_like(ids), ids)
    assert jnp.isfinite(stand_in) and stand_in != real
