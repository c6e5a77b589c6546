"""A small model with random (not init) weights: every parameter matters in the tests."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnl_jax.config import ModelConfig
from tnl_jax.model import create_model


def random_model(config: dict, seed: int, std: float) -> nnx.Module:
    """``create_model`` from ``config`` fields, then every Param drawn from N(0, std²)."""
    model = create_model(ModelConfig(**config), nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    nnx.update(model, jax.tree.unflatten(
        treedef, [jnp.asarray(rng.normal(0, std, x.shape), x.dtype) for x in leaves]))
    return model
