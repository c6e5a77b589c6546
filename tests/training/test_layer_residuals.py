"""benchmarks/training/layer_residuals.py reads jax's printed residuals into bytes."""
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from benchmarks.training.layer_residuals import saved_values


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
