"""The decode layout (per-layer weights and caches, decode_layout.py) decodes exactly as
the stacked model does, with the XLA step and with the Pallas step kernel (interpreted),
and refuses to run anything but decode steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import SMALL_MODEL
from tnl_jax.model.decode_layout import decode_layout, per_layer_caches


def decode_two_ways(model, ids, steps: int):
    """Logits and final caches of ``steps`` decode steps after a prefill of ``ids``,
    from the stacked model and from its decode layout."""
    @nnx.jit
    def run(model, ids):
        batch, width = ids.shape
        cache_size = width + steps
        _, caches = model.prefill(ids, None, None, cache_size)
        unstacked, per_layer = decode_layout(model), per_layer_caches(caches)
        kv_valid = jnp.arange(cache_size)[None] <= width
        results = {"stacked": ([], caches), "per-layer": ([], per_layer)}
        for i in range(steps):
            token, positions = ids[:, i % width], jnp.full((batch,), width + i)
            valid = jnp.broadcast_to(jnp.arange(cache_size)[None] <= width + i, kv_valid.shape)
            for name, runner in (("stacked", model), ("per-layer", unstacked)):
                logits, cache = runner.decode_step(token, positions, results[name][1],
                                                   width + i, valid)
                results[name] = (results[name][0] + [logits], cache)
        return {name: (jnp.stack(l), c) for name, (l, c) in results.items()}

    return run(model, ids)


@pytest.mark.parametrize("architecture,backend", [("tnl", "xla"), ("tnl", "interpret"),
                                                  ("hybrid", "xla"), ("llama", "xla")])
def test_decode_layout_decodes_like_the_stacked_model(small_model, rng, architecture, backend):
    model = small_model(2, architecture=architecture, softmax_every=2, attention_backend=backend)
    ids = jnp.asarray(rng.integers(3, SMALL_MODEL["vocab_size"], (2, 9)), jnp.int32)
    out = decode_two_ways(model, ids, 3)
    (stacked, stacked_caches), (per_layer, per_layer_caches_) = out["stacked"], out["per-layer"]
    np.testing.assert_allclose(per_layer, stacked, rtol=1e-5, atol=1e-5)
    for cache, layers in zip(stacked_caches, per_layer_caches_):
        for i, layer_cache in enumerate(layers):
            for a, b in zip(jax.tree.leaves(layer_cache), jax.tree.leaves(cache)):
                np.testing.assert_allclose(a, b[i], rtol=1e-5, atol=1e-5)


def test_decode_layout_runs_only_decode_steps(small_model):
    model = decode_layout(small_model(0))
    with pytest.raises(TypeError, match="only runs decode_step"):
        model(jnp.ones((1, 4), jnp.int32))
